"""Fakes for the demo: the vendor simulator, the demo organisations, the embedded PostgreSQL."""
