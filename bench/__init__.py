"""Benchmarks of the hub, run against a real PostgreSQL and real gunicorn servers (see bench/README.md)."""
