"""Configuration from the environment (EXPORTER_*, DATABASE_URL) and .env, validated at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EXPORTER_", env_file=".env", extra="ignore")

    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "EXPORTER_DATABASE_URL"),
        description="PostgreSQL DSN; unset means the embedded PostgreSQL in data_dir")
    db_role: str | None = Field(default="service_role", description="role the service's sessions SET; empty: none")
    data_dir: Path = Field(default=Path(".data"), description="where the embedded PostgreSQL keeps its files")
    check_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    credentials_dir: Path | None = Field(default=None, description="directory of secret files (one per ref)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"


def describe_settings_error(exc: ValidationError) -> str:
    """One line per bad variable: its environment name and what to put there."""
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        name = str(err["loc"][0]).upper() if err["loc"] else "?"
        env = name if name == "DATABASE_URL" else f"EXPORTER_{name}"
        lines.append(f"{env}: {err['msg']}")
    return "; ".join(lines)
