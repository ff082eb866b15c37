"""Helpers for tests and local networks (tiny models); nothing here runs in a production node."""
