"""The storage service: encrypted, erasure-coded, sharded files (owner side) and shard hosting (hoster side)."""
