"""AVADIOS: the shared hallway of a DIO node (identity, config, NATS transport, logs, supervisor)."""

__version__ = "0.1.0"
