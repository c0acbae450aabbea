"""Credential providers: one directory per organisation, refusals that all read the same, a cache keyed by
organisation and reference that forgets on demand."""

from pathlib import Path
from uuid import UUID

import pytest
from pydantic import SecretStr

from exporter.core.model import CREDENTIAL_REFUSED, CredentialError, CredentialUnavailable, secret_name
from exporter.storage.credentials import CachedCredentials, DirectoryCredentials
from tests.support.fakes import StaticCredentials

ORG_A = UUID("aaaaaaaa-0000-4000-8000-00000000000a")
ORG_B = UUID("bbbbbbbb-0000-4000-8000-00000000000b")


def plant(root: Path, org: UUID, ref: str, secret: str) -> None:
    (root / str(org)).mkdir(exist_ok=True)
    (root / str(org) / ref).write_text(secret + "\n")


async def test_directory_provider_reads_the_orgs_own_file(tmp_path: Path) -> None:
    """`<dir>/<org_id>/<ref>`, trailing newline trimmed, never shown by repr."""
    plant(tmp_path, ORG_A, "xledger", "tok-123")
    secret = await DirectoryCredentials(tmp_path).get(ORG_A, "xledger")
    assert secret.get_secret_value() == "tok-123"
    assert "tok-123" not in repr(secret)


@pytest.mark.parametrize("ref", [
    "xledger",  # A's file name, from B
    f"../{ORG_A}/xledger",  # a path out of B's directory into A's
    f"{ORG_A}/xledger",  # A's id as a prefix
    "../../etc/passwd", "/etc/passwd", "a/b", "", ".hidden", "..", "x\x00y", "ß" * 3, "x" * 129,
])
async def test_directory_provider_refuses_another_orgs_file_and_paths_alike(tmp_path: Path, ref: str) -> None:
    """Every refusal is the missing-secret message, so B learns nothing about what A has."""
    plant(tmp_path, ORG_A, "xledger", "tok-A")
    (tmp_path / str(ORG_B)).mkdir()
    with pytest.raises(CredentialError) as refused:
        await DirectoryCredentials(tmp_path).get(ORG_B, ref)
    with pytest.raises(CredentialError) as missing:
        await DirectoryCredentials(tmp_path).get(ORG_B, "nope")
    assert str(refused.value) == str(missing.value) == CREDENTIAL_REFUSED
    assert "tok-A" not in str(refused.value)


async def test_directory_provider_refuses_an_org_without_a_directory(tmp_path: Path) -> None:
    """An organisation nobody gave secrets to has none, not someone else's."""
    plant(tmp_path, ORG_A, "xledger", "tok-A")
    with pytest.raises(CredentialError, match=CREDENTIAL_REFUSED):
        await DirectoryCredentials(tmp_path).get(ORG_B, "xledger")


def test_secret_names_carry_the_org_and_refuse_paths() -> None:
    """The convention has one definition; a ref that is not a plain name cannot build one."""
    assert secret_name(ORG_A, "xledger") == f"{ORG_A}/xledger"
    for bad in ("../x", f"{ORG_B}/x", ""):
        with pytest.raises(ValueError, match="plain name"):
            secret_name(ORG_A, bad)


async def test_cache_serves_until_ttl_then_rereads_a_rotated_secret() -> None:
    """The TTL still bounds how long a rotation takes when nothing was refused."""
    now = [0.0]
    inner = StaticCredentials({"k": "old"})
    cached = CachedCredentials(inner, ttl=300, monotonic=lambda: now[0])
    assert (await cached.get(ORG_A, "k")).get_secret_value() == "old"
    inner.set("k", "new")
    now[0] = 299
    assert (await cached.get(ORG_A, "k")).get_secret_value() == "old"
    now[0] = 301
    assert (await cached.get(ORG_A, "k")).get_secret_value() == "new"


async def test_cache_never_serves_one_orgs_secret_to_another(tmp_path: Path) -> None:
    """Keyed by (org, ref): A's cached `xledger` is not B's `xledger`."""
    plant(tmp_path, ORG_A, "xledger", "tok-A")
    cached = CachedCredentials(DirectoryCredentials(tmp_path), ttl=300)
    assert (await cached.get(ORG_A, "xledger")).get_secret_value() == "tok-A"
    with pytest.raises(CredentialError, match=CREDENTIAL_REFUSED):
        await cached.get(ORG_B, "xledger")


async def test_forget_drops_a_cached_secret_so_the_next_read_sees_the_rotation(tmp_path: Path) -> None:
    """After a vendor refused a secret, the next check reads the store, not the TTL cache."""
    plant(tmp_path, ORG_A, "fiken", "old")
    cached = CachedCredentials(DirectoryCredentials(tmp_path), ttl=300, monotonic=lambda: 0.0)
    assert (await cached.get(ORG_A, "fiken")).get_secret_value() == "old"
    plant(tmp_path, ORG_A, "fiken", "new")
    assert (await cached.get(ORG_A, "fiken")).get_secret_value() == "old"
    cached.forget(ORG_B, "fiken")  # another org's forget leaves A's entry alone
    assert (await cached.get(ORG_A, "fiken")).get_secret_value() == "old"
    cached.forget(ORG_A, "fiken")
    assert (await cached.get(ORG_A, "fiken")).get_secret_value() == "new"


def test_negative_ttl_is_refused() -> None:
    with pytest.raises(ValueError, match="ttl must be >= 0"):
        CachedCredentials(StaticCredentials({}), ttl=-1)


class Flaky:
    """A provider whose store can go away (CredentialUnavailable) while it still knows its secrets."""

    def __init__(self) -> None:
        self.down, self.reads = False, 0

    async def get(self, org_id, ref) -> SecretStr:
        self.reads += 1
        if self.down:
            raise CredentialUnavailable("vault lookup failed: ConnectionRefusedError")
        return SecretStr(f"secret-of-{ref}")

    def forget(self, org_id, ref) -> None:
        pass


async def test_an_unavailable_store_serves_the_last_secret_for_a_bounded_time_then_says_unavailable() -> None:
    now = [0.0]
    inner, org = Flaky(), UUID("77777777-7777-4777-8777-777777777777")
    cached = CachedCredentials(inner, ttl=300, stale_s=3600, monotonic=lambda: now[0])
    assert (await cached.get(org, "a")).get_secret_value() == "secret-of-a"
    inner.down, now[0] = True, 1000.0  # past the cache time, within the stale window
    assert (await cached.get(org, "a")).get_secret_value() == "secret-of-a"
    with pytest.raises(CredentialUnavailable):
        await cached.get(org, "never-read")  # nothing known to fall back on
    now[0] = 300 + 3600 + 1.0
    with pytest.raises(CredentialUnavailable):
        await cached.get(org, "a")
    assert inner.reads == 4, "the store is asked each time: it is used again as soon as it answers"
