"""Data internals: FineWeb-format shards, the embedded corpus and its sources."""
