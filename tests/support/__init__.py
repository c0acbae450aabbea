"""Test support: fakes and a misbehaving server. Never imported by the shipped package."""
