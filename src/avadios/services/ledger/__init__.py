"""The ledger service: a full replica of the AUTOM ledger in RocksDB, its elections and votes."""
