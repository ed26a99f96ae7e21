"""Backends for the end-to-end benchmark (consumers of the Redis streams)."""
