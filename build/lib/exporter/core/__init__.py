"""Pure decisions and data: no sockets, no SQL, no aiohttp or asyncpg (tests/unit/test_layers.py enforces it)."""
