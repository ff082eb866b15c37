"""The gateway service: the node's local HTTP API (OpenAI-compatible) and, later, its P2P side."""
