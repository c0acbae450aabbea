"""Webhook signing secrets sealed at rest: AES-256-GCM under an operator key, bound to their subscription.

A secret must be readable by the service to sign with, so it cannot be hashed; sealing it keeps a copy of
the table (a backup, a dump, a replica, a role granted too much) from yielding any organisation's secret.
The operator's keys (EXPORTER_WEBHOOK_SECRET_KEYS) live outside the database. Each ciphertext names the key
that sealed it, so keys rotate: the first key seals, every listed key opens. The subscription id is the
associated data, so a sealed secret copied onto another subscription does not open.

The name stored with a ciphertext is the operator's label plus a fingerprint of the key (`k1.3fa2b1c9`): a
replica started with another key under the same label seals under another name, so the other replicas see
rows they cannot open (held, alerted) instead of taking them for their own and skipping them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
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
FINGERPRINT = b"integration-health/webhook-key-id/v1"  # HMAC message: 32 bits that name a key, reveal nothing
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


def stored_id(label: str, key: bytes) -> str:
    """The name a ciphertext carries: the operator's label and the key's fingerprint."""
    return f"{label}.{hmac.new(key, FINGERPRINT, hashlib.sha256).hexdigest()[:8]}"


def label_of(key_id: str) -> str:
    """The operator's label in a stored key name (what EXPORTER_WEBHOOK_SECRET_KEYS calls it)."""
    return key_id.rpartition(".")[0] or key_id


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
        for n, (label, key) in enumerate(keys, 1):
            if not KEY_ID.fullmatch(label):  # never echoed: a key pasted in the id's place would be shown
                raise ValueError(f"entry {n}: the key id must be 1 to 32 of A-Z a-z 0-9 _ . -")
            if len(key) != KEY_BYTES:
                raise ValueError(f"key {label!r} must be {KEY_BYTES} bytes")
        labels = [label for label, _ in keys]
        if len(set(labels)) != len(labels):
            raise ValueError(f"key ids repeat: {', '.join(labels)}")
        self._ciphers = {stored_id(label, key): AESGCM(key) for label, key in keys}
        self.current = next(iter(self._ciphers))  # the stored name of the first key, which seals

    @classmethod
    def parse(cls, text: str) -> Keyring:
        """`id:base64key[,id:base64key…]`, newest first, e.g. `2026-11:…,2025-06:…`."""
        keys = []
        for n, entry in enumerate((e for e in text.split(",") if e.strip()), 1):
            key_id, colon, key = entry.strip().partition(":")
            if not colon:
                raise ValueError(f"entry {n} must be <key id>:<base64 key>, e.g. k1:$({GENERATE})")
            if not KEY_ID.fullmatch(key_id.strip()):  # not echoed: it may be a key written in the wrong place
                raise ValueError(f"entry {n}: the key id must be 1 to 32 of A-Z a-z 0-9 _ . - "
                                 f"(<key id>:<base64 key>)")
            try:
                keys.append((key_id.strip(), _key_bytes(key)))
            except ValueError as exc:
                raise ValueError(f"entry {n} ({key_id.strip()!r}): {exc}") from None
        return cls(keys)

    @property
    def ids(self) -> tuple[str, ...]:
        """The stored names of the keys, newest first."""
        return tuple(self._ciphers)

    def seal(self, subscription_id: UUID, secret: str) -> Sealed:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._ciphers[self.current].encrypt(nonce, secret.encode(), _aad(subscription_id))
        return Sealed(self.current, nonce + sealed)

    def open(self, subscription_id: UUID, sealed: Sealed) -> str:
        cipher = self._ciphers.get(sealed.key_id)
        if cipher is None:
            raise Unsealable(f"the signing secret is sealed with key {sealed.key_id!r} (id "
                             f"{label_of(sealed.key_id)!r} and that fingerprint), which is not in "
                             "EXPORTER_WEBHOOK_SECRET_KEYS: add that key back, the same bytes under that id")
        try:
            plain = cipher.decrypt(sealed.blob[:NONCE_BYTES], sealed.blob[NONCE_BYTES:], _aad(subscription_id))
        except (InvalidTag, ValueError):
            raise Unsealable(f"the signing secret does not open with key {sealed.key_id!r}: the row was "
                             "altered or copied from another subscription") from None
        return plain.decode()

    def __repr__(self) -> str:
        return f"Keyring(current={self.current!r}, ids={list(self.ids)!r})"


def new_key(key_id: str) -> str:
    """A fresh keyring entry, `<id>:<base64 of 32 random bytes>` (the demo makes its own this way)."""
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}"
