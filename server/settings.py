"""Server settings, from the environment (`RELAYGRAPH_*`, `DATABASE_URL`) and the command line."""

import ipaddress
import os
from typing import Literal

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from checkpoints.factory import storage_kind

DEFAULT_DATABASE = ".relaygraph/relaygraph.db"
PRODUCTION_NEEDS_POSTGRES = (
    "RELAYGRAPH_PRODUCTION is set but the database is {kind}: production runs on Postgres "
    "(set DATABASE_URL=postgresql://...)."
)
PRODUCTION_NEEDS_PASSWORD = (
    "RELAYGRAPH_PRODUCTION is set but the Postgres URL has no password (nor PGPASSWORD or "
    "PGPASSFILE): give one, or connect over a Unix socket (host=/run/postgresql)."
)
PRODUCTION_NEEDS_TLS = (
    "RELAYGRAPH_PRODUCTION is set and serve listens on {host}, beyond this machine, over plain "
    "HTTP: API keys and device tokens would cross the network in clear. Set "
    "RELAYGRAPH_TLS_CERTFILE and RELAYGRAPH_TLS_KEYFILE, or RELAYGRAPH_BEHIND_TLS_PROXY=true "
    "when a proxy in front terminates TLS."
)


class Settings(BaseSettings):
    """Everything `relaygraph serve` can be told; validated at start-up."""

    model_config = SettingsConfigDict(env_prefix="RELAYGRAPH_", extra="ignore")

    database_url: str = Field(
        default=DEFAULT_DATABASE,
        validation_alias=AliasChoices("RELAYGRAPH_DATABASE_URL", "DATABASE_URL", "database_url"),
        description="A SQLite path (the embedded default) or a postgresql:// URL.",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8123, ge=1, le=65535)
    workers: int = Field(default=8, ge=1, le=256, description="Runs executing at once.")
    pool_size: int = Field(default=20, ge=2, le=500, description="Postgres connections.")
    savers: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Postgres checkpointers; each runs one operation at a time.",
    )
    checkpoint_cache: int = Field(
        default=256,
        ge=0,
        le=100_000,
        description="Postgres: threads whose latest checkpoint is kept in memory, so that a "
        "run resumed here does not read back what its previous step wrote (0: none).",
    )
    durability: Literal["exit", "async", "sync"] = Field(
        default="exit",
        description="When a run's checkpoints are written: at the end of each step between "
        "device round trips (exit), or also after every graph step (async, sync). Device "
        "calls go out only after the step's checkpoint is written whichever you choose; see "
        "docs/architecture.md.",
    )
    prepared_statements: bool = Field(
        default=True,
        description="Postgres prepared statements for the server's own queries (turn off "
        "behind a PgBouncer in transaction mode older than 1.21).",
    )
    max_body_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="The largest HTTP request body taken; a larger one is refused (413) "
        "before it is read.",
    )
    tls_certfile: str | None = Field(default=None, description="Serve HTTPS with this certificate.")
    tls_keyfile: str | None = Field(default=None, description="The certificate's private key.")
    behind_tls_proxy: bool = Field(
        default=False, description="A proxy in front of serve terminates TLS (production)."
    )
    production: bool = Field(
        default=False,
        description="Refuse what is unsafe beyond one machine: the embedded SQLite, a Postgres "
        "URL without a password, plain HTTP on a non-loopback address.",
    )
    scheduler_interval: float = Field(default=5.0, gt=0, description="Seconds between ticks.")
    hello_timeout: float = Field(default=10.0, gt=0, description="Seconds to say device_hello.")

    @model_validator(mode="after")
    def _production_is_safe(self) -> "Settings":
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError(
                "set both RELAYGRAPH_TLS_CERTFILE and RELAYGRAPH_TLS_KEYFILE, or neither"
            )
        if not self.production:
            return self
        kind = storage_kind(self.database_url)
        if kind != "postgres":
            raise ValueError(PRODUCTION_NEEDS_POSTGRES.format(kind=kind))
        if not _has_password(self.database_url):
            raise ValueError(PRODUCTION_NEEDS_PASSWORD)
        if not _loopback(self.host) and self.tls_certfile is None and not self.behind_tls_proxy:
            raise ValueError(PRODUCTION_NEEDS_TLS.format(host=self.host))
        return self


def _has_password(url: str) -> bool:
    """Whether a Postgres URL comes with a password, or needs none (a Unix socket)."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise ValueError(f"DATABASE_URL is not a Postgres URL psycopg reads: {exc}") from exc
    host = str(params.get("host") or "")
    if params.get("password") or os.environ.get("PGPASSWORD") or os.environ.get("PGPASSFILE"):
        return True
    return host.startswith("/") or (not host and not os.environ.get("PGHOST"))


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
