"""EXPORTER_WEBHOOK_SECRET_KEYS at start-up: `serve` refuses to run without it and says what to set, a
malformed value is refused without being echoed, and the demo keeps a key of its own across runs."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from exporter import cli, logs
from exporter.core.sealing import Keyring
from exporter.settings import Settings, describe_settings_error

KEY = base64.b64encode(bytes(range(32))).decode()
OTHER = base64.b64encode(bytes(range(32, 64))).decode()


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    monkeypatch.setattr(logs, "configure", lambda level, fmt: None)  # main() would take over the root logger
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:9/never-reached")
    monkeypatch.setenv("EXPORTER_API_TOKEN", "a-long-enough-operator-token")
    monkeypatch.delenv("EXPORTER_WEBHOOK_SECRET_KEYS", raising=False)
    return monkeypatch


def test_serve_without_a_sealing_key_stops_before_anything_and_says_what_to_set(environment, capsys) -> None:
    assert cli.main(["serve"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: EXPORTER_WEBHOOK_SECRET_KEYS is not set"), err
    assert 'EXPORTER_WEBHOOK_SECRET_KEYS="k1:$(openssl rand -base64 32)"' in err


@pytest.mark.parametrize(("value", "why"), [
    ("k1", "entry 1 must be <key id>:<base64 key>"),
    ("k1:c2hvcnQ=", "entry 1 ('k1'): the key must be 32 bytes in base64"),
    (f"k1:{KEY},k1:{KEY}", "key ids repeat"),
    ("k1:REPLACEwithOpensslRandBase64ThirtyTwoOutput=", "still the example key of .env.example"),
])
def test_a_malformed_key_setting_stops_the_start_naming_the_variable_never_the_key(environment, capsys, value,
                                                                                   why) -> None:
    environment.setenv("EXPORTER_WEBHOOK_SECRET_KEYS", value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = describe_settings_error(caught.value)
    assert message.startswith("EXPORTER_WEBHOOK_SECRET_KEYS: ") and why in message, message
    assert KEY not in message and "c2hvcnQ" not in message
    assert KEY not in str(caught.value) and "c2hvcnQ" not in str(caught.value)  # as a traceback would show it
    assert cli.main(["serve"]) == cli.EXIT_USAGE
    assert KEY not in capsys.readouterr().err


def test_a_good_key_setting_gives_the_keyring_and_an_empty_one_is_unset(environment) -> None:
    environment.setenv("EXPORTER_WEBHOOK_SECRET_KEYS", f"2026-11:{KEY}, 2025-06:{OTHER}")
    keys = Settings().webhook_keyring
    assert isinstance(keys, Keyring) and (keys.current, keys.ids) == ("2026-11", ("2026-11", "2025-06"))
    assert KEY not in repr(Settings())
    environment.setenv("EXPORTER_WEBHOOK_SECRET_KEYS", " ")
    assert Settings().webhook_keyring is None


def test_the_demo_makes_its_key_once_keeps_it_private_and_an_operators_key_wins(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = cli.demo_settings(Settings(data_dir=data)).webhook_secret_keys
    again = cli.demo_settings(Settings(data_dir=data)).webhook_secret_keys
    assert first is not None and again is not None and first.get_secret_value() == again.get_secret_value()
    assert Keyring.parse(first.get_secret_value()).current == "demo"
    [key_file] = data.iterdir()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    mine = SecretStr(f"ops:{KEY}")
    assert cli.demo_settings(Settings(data_dir=data, webhook_secret_keys=mine)).webhook_secret_keys == mine


def test_the_env_example_key_is_refused_so_a_copied_env_file_cannot_go_live_with_it() -> None:
    example = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    [line] = [x for x in example.splitlines() if x.startswith("EXPORTER_WEBHOOK_SECRET_KEYS=")]
    with pytest.raises(ValidationError, match="still the example key"):
        Settings(webhook_secret_keys=line.split("=", 1)[1])
