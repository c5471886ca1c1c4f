"""Server settings, from the environment (`RELAYGRAPH_*`, `DATABASE_URL`) and the command line."""

from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from checkpoints.factory import storage_kind

DEFAULT_DATABASE = ".relaygraph/relaygraph.db"
PRODUCTION_NEEDS_POSTGRES = (
    "RELAYGRAPH_PRODUCTION is set but the database is {kind}: production runs on Postgres "
    "(set DATABASE_URL=postgresql://...)."
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
    production: bool = Field(default=False, description="Refuse the embedded defaults.")
    scheduler_interval: float = Field(default=5.0, gt=0, description="Seconds between ticks.")
    hello_timeout: float = Field(default=10.0, gt=0, description="Seconds to say device_hello.")

    @model_validator(mode="after")
    def _production_needs_postgres(self) -> "Settings":
        kind = storage_kind(self.database_url)
        if self.production and kind != "postgres":
            raise ValueError(PRODUCTION_NEEDS_POSTGRES.format(kind=kind))
        return self
