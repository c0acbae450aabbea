from pathlib import Path

import pytest

from exporter.core.model import CredentialError
from exporter.storage.credentials import CachedCredentials, DirectoryCredentials
from tests.support.fakes import StaticCredentials


async def test_directory_provider_reads_one_file_per_secret(tmp_path: Path) -> None:
    (tmp_path / "xledger-acme").write_text("tok-123\n")
    secret = await DirectoryCredentials(tmp_path).get("xledger-acme")
    assert secret.get_secret_value() == "tok-123"
    assert "tok-123" not in repr(secret)


@pytest.mark.parametrize("ref", ["../etc/passwd", "a/b", "", ".hidden"])
async def test_directory_provider_refuses_paths(tmp_path: Path, ref: str) -> None:
    with pytest.raises(CredentialError, match="not a plain file name"):
        await DirectoryCredentials(tmp_path).get(ref)


async def test_missing_secret_names_the_reference(tmp_path: Path) -> None:
    with pytest.raises(CredentialError, match="credential 'nope' not found"):
        await DirectoryCredentials(tmp_path).get("nope")


async def test_cache_serves_until_ttl_then_rereads_a_rotated_secret() -> None:
    now = [0.0]
    inner = StaticCredentials({"k": "old"})
    cached = CachedCredentials(inner, ttl=300, monotonic=lambda: now[0])
    assert (await cached.get("k")).get_secret_value() == "old"
    inner._secrets["k"] = type(inner._secrets["k"])("new")
    now[0] = 299
    assert (await cached.get("k")).get_secret_value() == "old"
    now[0] = 301
    assert (await cached.get("k")).get_secret_value() == "new"


def test_negative_ttl_is_refused() -> None:
    with pytest.raises(ValueError, match="ttl must be >= 0"):
        CachedCredentials(StaticCredentials({}), ttl=-1)
