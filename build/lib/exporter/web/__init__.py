"""Serves: the aiohttp app and its lifecycle, the /api/v1 handlers, the /metrics exposition."""
