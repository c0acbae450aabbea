"""Webhook signing secrets sealed at rest: AES-256-GCM under an operator key, bound to their subscription.

A secret must be readable by the service to sign with, so it cannot be hashed; sealing it keeps a copy of
the table (a backup, a dump, a replica, a role granted too much) from yielding any organisation's secret.
The operator's keys (EXPORTER_WEBHOOK_SECRET_KEYS) live outside the database. Each ciphertext names the key
that sealed it, so keys rotate: the first key seals, every listed key opens. The subscription id is the
associated data, so a sealed secret copied onto another subscription does not open.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # GCM's standard nonce, random per seal: far below 2^32 seals per key
KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,32}")
CONTEXT = b"integration-health/webhook-secret/v1\x00"  # what the associated data says, besides the subscription
GENERATE = "openssl rand -base64 32"


class Unsealable(Exception):
    """A sealed secret this keyring cannot open; the message names the key id and the fix, never key or secret."""


@dataclass(frozen=True, slots=True)
class Sealed:
    """A secret as stored: the id of the key that sealed it, and nonce + ciphertext + tag."""

    key_id: str
    blob: bytes

    def __repr__(self) -> str:
        return f"Sealed(key_id={self.key_id!r}, {len(self.blob)} bytes)"


def _aad(subscription_id: UUID) -> bytes:
    return CONTEXT + subscription_id.bytes


def _key_bytes(text: str) -> bytes:
    """32 bytes from base64 (standard or URL-safe alphabet); ValueError that never repeats the text."""
    try:
        key = base64.b64decode(text.strip().replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise ValueError(f"the key must be {KEY_BYTES} bytes in base64 (`{GENERATE}`)")
    return key


class Keyring:
    """The operator's keys by id; the first seals, all open. Never shows a key in a repr or an error."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        ids = [key_id for key_id, _ in keys]
        if len(set(ids)) != len(ids):
            raise ValueError(f"key ids repeat: {', '.join(ids)}")
        for key_id, key in keys:
            if not KEY_ID.fullmatch(key_id):
                raise ValueError(f"key id {key_id[:40]!r} must be 1 to 32 of A-Z a-z 0-9 _ . -")
            if len(key) != KEY_BYTES:
                raise ValueError(f"key {key_id!r} must be {KEY_BYTES} bytes")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys}
        self.current = ids[0]

    @classmethod
    def parse(cls, text: str) -> Keyring:
        """`id:base64key[,id:base64key…]`, newest first, e.g. `2026-11:…,2025-06:…`."""
        keys = []
        for n, entry in enumerate((e for e in text.split(",") if e.strip()), 1):
            key_id, colon, key = entry.strip().partition(":")
            if not colon:
                raise ValueError(f"entry {n} must be <key id>:<base64 key>, e.g. k1:$({GENERATE})")
            try:
                keys.append((key_id.strip(), _key_bytes(key)))
            except ValueError as exc:
                raise ValueError(f"entry {n} ({key_id.strip()[:32]!r}): {exc}") from None
        return cls(keys)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._ciphers)

    def seal(self, subscription_id: UUID, secret: str) -> Sealed:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._ciphers[self.current].encrypt(nonce, secret.encode(), _aad(subscription_id))
        return Sealed(self.current, nonce + sealed)

    def open(self, subscription_id: UUID, sealed: Sealed) -> str:
        cipher = self._ciphers.get(sealed.key_id)
        if cipher is None:
            raise Unsealable(f"the signing secret is sealed with key {sealed.key_id!r}, which is not in "
                             "EXPORTER_WEBHOOK_SECRET_KEYS: add that key back")
        try:
            plain = cipher.decrypt(sealed.blob[:NONCE_BYTES], sealed.blob[NONCE_BYTES:], _aad(subscription_id))
        except (InvalidTag, ValueError):
            raise Unsealable(f"the signing secret does not open with key {sealed.key_id!r}: that id names "
                             "another key in EXPORTER_WEBHOOK_SECRET_KEYS than the one that sealed it, or the "
                             "row was copied from another subscription") from None
        return plain.decode()

    def __repr__(self) -> str:
        return f"Keyring(current={self.current!r}, ids={list(self.ids)!r})"


def new_key(key_id: str) -> str:
    """A fresh keyring entry, `<id>:<base64 of 32 random bytes>` (the demo makes its own this way)."""
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}"
