"""Test support shipped with orchestra: a fake llama-server that speaks its real HTTP API."""
