"""The rooms of a DIO node: one package per service, each run as its own process (`python -m services.<name>`)."""
