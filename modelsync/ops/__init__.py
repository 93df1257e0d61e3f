"""Operators' tools for debugging a Job (bin/): run it from its pod spec, check its connections and credentials
without moving data, inspect the modelcar it produced."""
