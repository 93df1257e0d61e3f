"""Destinations: each publishes the files of the storage path somewhere and returns what was published."""
