"""The one settings object: read once from flags, the environment and an optional YAML file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from clearing.types import PriceRule

ENV_PREFIX = "AUCTION_"


class SettingsError(ValueError):
    """Settings that cannot be used; the message lists every mistake, one per line."""


class Settings(BaseModel):
    """Everything the service can be configured with. Immutable once built."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64)
    redis_url: str | None = None  # None: start the embedded Redis in data_dir
    data_dir: Path = Path(".auction")
    key_prefix: str = Field("auction", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    admin_token: SecretStr | None = None
    catalogue: Path | None = None
    catalogue_mode: Literal["extend", "replace"] = "extend"
    price_rule: PriceRule = "pay_as_ask"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Offers and bidder sessions.
    default_ttl_ms: int = Field(15_000, ge=1_000)
    max_ttl_ms: int = Field(300_000, ge=1_000)
    heartbeat_ms: int = Field(5_000, ge=100)
    max_message_bytes: int = Field(256 * 1024, ge=1024)
    max_offers_per_provider: int = Field(1_000, ge=1)
    max_messages_per_second: int = Field(200, ge=1)

    # Client requests.
    default_timeout_ms: int = Field(60_000, ge=100)
    max_timeout_ms: int = Field(600_000, ge=100)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    failover_depth: int = Field(5, ge=1, le=50)
    reservation_grace_ms: int = Field(10_000, ge=0)  # a hold outlives its deadline by this much
    clearing_record_ttl_s: int = Field(7 * 86_400, ge=60)
    rate_limit_per_minute: int = Field(600, ge=1)

    # Passive health.
    failures_to_cool_down: int = Field(3, ge=1)
    cool_down_ms: int = Field(30_000, ge=0)
    probe_share: float = Field(0.05, ge=0, le=1)  # not money: the share of traffic that probes
    observed_after_requests: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.default_ttl_ms > self.max_ttl_ms:
            raise ValueError("default_ttl_ms must not exceed max_ttl_ms")
        if self.default_timeout_ms > self.max_timeout_ms:
            raise ValueError("default_timeout_ms must not exceed max_timeout_ms")
        if self.catalogue is not None and not self.catalogue.is_file():
            raise ValueError(f"catalogue file {self.catalogue} does not exist")
        return self

    @classmethod
    def load(
        cls,
        flags: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        config_file: Path | None = None,
    ) -> Settings:
        """Build settings; flags beat the environment, which beats the file, which beats defaults.

        Environment names are AUCTION_<FIELD> (AUCTION_ADMIN_TOKEN, AUCTION_PORT, ...), plus
        REDIS_URL for the Redis. Flags whose value is None are ignored.

        Raises:
            SettingsError: a field is unknown or invalid, or the file cannot be read.
        """
        values: dict[str, Any] = {}
        if config_file is not None:
            values.update(_read_yaml(config_file))
        env = environ or {}
        for name in cls.model_fields:
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is not None and raw != "":
                values[name] = raw
        if env.get("REDIS_URL"):
            values["redis_url"] = env["REDIS_URL"]
        for name, value in (flags or {}).items():
            if value is not None:
                values[name] = value
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            lines = []
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"]) or "settings"
                lines.append(f"{where}: {err['msg']}")
            raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SettingsError(f"cannot read settings file {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"settings file {path} must hold a mapping of field: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}
