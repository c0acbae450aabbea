"""Sealing webhook signing secrets: what opens, what does not, and what an operator's mistake looks like."""

from __future__ import annotations

import base64
import re
from uuid import uuid4

import pytest

from exporter.core.sealing import KEY_BYTES, Keyring, Sealed, Unsealable, new_key

OLD, NEW = bytes(range(32)), bytes(range(100, 132))
SECRET = "whsec_planted-secret-0123456789abcdefghijklmnopqrstu"


def entry(key_id: str, key: bytes) -> str:
    return f"{key_id}:{base64.b64encode(key).decode()}"


def test_a_sealed_secret_opens_for_its_subscription_and_holds_no_plaintext() -> None:
    keys, sub = Keyring([("k1", OLD)]), uuid4()
    sealed = keys.seal(sub, SECRET)
    assert sealed.key_id == "k1" and SECRET.encode() not in sealed.blob
    assert keys.open(sub, sealed) == SECRET
    assert keys.seal(sub, SECRET).blob != sealed.blob  # a fresh nonce each time


def test_a_sealed_secret_copied_onto_another_subscription_does_not_open() -> None:
    keys = Keyring([("k1", OLD)])
    sealed = keys.seal(uuid4(), SECRET)
    with pytest.raises(Unsealable, match="does not open with key 'k1'") as refused:
        keys.open(uuid4(), sealed)
    assert SECRET not in str(refused.value)


def test_a_tampered_blob_does_not_open() -> None:
    keys, sub = Keyring([("k1", OLD)]), uuid4()
    sealed = keys.seal(sub, SECRET)
    flipped = sealed.blob[:-1] + bytes([sealed.blob[-1] ^ 1])
    with pytest.raises(Unsealable):
        keys.open(sub, Sealed("k1", flipped))
    with pytest.raises(Unsealable):
        keys.open(sub, Sealed("k1", b"short"))


def test_the_first_key_seals_and_every_listed_key_opens() -> None:
    sub = Keyring([("old", OLD)])
    sealed_old = sub.seal(s := uuid4(), SECRET)
    rotated = Keyring.parse(f"{entry('new', NEW)}, {entry('old', OLD)}")
    assert rotated.current == "new" and rotated.ids == ("new", "old")
    assert rotated.open(s, sealed_old) == SECRET
    assert rotated.seal(s, SECRET).key_id == "new"


def test_a_key_that_is_not_configured_or_is_another_key_under_the_same_id_says_which_id() -> None:
    s = uuid4()
    sealed = Keyring([("k1", OLD)]).seal(s, SECRET)
    with pytest.raises(Unsealable, match="sealed with key 'k1', which is not in EXPORTER_WEBHOOK_SECRET_KEYS"):
        Keyring([("k2", NEW)]).open(s, sealed)
    with pytest.raises(Unsealable, match="does not open with key 'k1'"):
        Keyring([("k1", NEW)]).open(s, sealed)


@pytest.mark.parametrize(("text", "why"), [
    ("", "at least one key"),
    ("k1", "entry 1 must be <key id>:<base64 key>"),
    ("k1:c2hvcnQ=", "entry 1 ('k1'): the key must be 32 bytes in base64"),
    ("k1:not base64 at all!", "entry 1 ('k1'): the key must be 32 bytes in base64"),
    (f"k1:{base64.b64encode(OLD).decode()},k1:{base64.b64encode(NEW).decode()}", "key ids repeat"),
    (f"bad id:{base64.b64encode(OLD).decode()}", "must be 1 to 32 of"),
])
def test_a_malformed_keyring_is_refused_without_echoing_key_material(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)) as refused:
        Keyring.parse(text)
    assert "c2hvcnQ" not in str(refused.value) and base64.b64encode(OLD).decode() not in str(refused.value)


def test_url_safe_base64_and_generated_entries_parse_and_nothing_shows_a_key() -> None:
    key = bytes([0xFB] * KEY_BYTES)  # encodes with + and / in the standard alphabet
    keys = Keyring.parse(f"u:{base64.urlsafe_b64encode(key).decode()},{new_key('g')}")
    assert keys.ids == ("u", "g")
    sealed = keys.seal(s := uuid4(), SECRET)
    assert Keyring([("u", key)]).open(s, sealed) == SECRET
    assert repr(keys) == "Keyring(current='u', ids=['u', 'g'])" and SECRET not in repr(sealed)
