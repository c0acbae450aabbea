"""Talks to PostgreSQL: the store (asyncpg), migrations, credential providers."""
