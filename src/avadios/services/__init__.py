"""The rooms of a DIO node: one package per service, each run as its own process (`python -m avadios.services.<name>`).
A room imports the hallway (the rest of `avadios`) and the generated code, never another room."""
