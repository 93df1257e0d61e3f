"""Sources: each fetches a model's files into the storage path and returns what it fetched."""
