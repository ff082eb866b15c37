"""The tier 0 cache service: finished answers to reproducible requests, in RocksDB."""
