"""One settings object, built once at the CLI and passed down (``INTERCOM_`` prefix)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from intercom_gateway.core.ingress import Limits

# The package's data folder (policy, sample registries), found by importlib.resources
# as package data: an installed wheel has no repository around it. A wheel installs as
# plain files, so this is a real folder whose files the settings below can name.
DATA = Path(str(resources.files("intercom_gateway").joinpath("data")))

# Settings that are gone. Naming one in the environment stops the CLI with one line
# rather than being ignored: whoever set INTERCOM_MQTT_CLIENT=paho expects paho.
RETIRED = {
    "INTERCOM_MQTT_CLIENT": "the gateway has one MQTT transport (bus.MqttBus); paho-mqtt"
    " is only the tests' reference now (tests/reference_paho.py)",
    # Issue #17: Mosquitto deals a shared subscription's messages round robin, so one
    # gateway took a dwelling's consent change and the others kept deciding on the old
    # consent (20 of 40 events reached a partner the dwelling had stopped).
    "INTERCOM_SHARE_GROUP": "a shared subscription splits one dwelling's events and its"
    " consent changes across gateways, so some decide on withdrawn consent; run one"
    " gateway per broker (README, 'Several gateways')",
}


def retired_setting(environ: Mapping[str, str]) -> str | None:
    """The complaint about the first retired setting set in ``environ``; None if none."""
    names = {name.upper() for name in environ}
    for name, why in RETIRED.items():
        if name in names:
            return f"{name} is no longer read: {why}; unset it"
    return None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTERCOM_", extra="forbid")

    # --- broker --------------------------------------------------------------------
    broker_host: str = "127.0.0.1"
    broker_port: int = 1883
    broker_user: str = "gateway"
    broker_password: SecretStr | None = Field(
        default=None, description="default: read from <secrets_dir>/credentials.json"
    )
    broker_ca_file: Path | None = Field(default=None, description="CA for a TLS listener")
    secrets_dir: Path = Path(".secrets/broker")
    keepalive: int = 30
    session_expiry: int = Field(default=86_400, description="seconds the broker keeps our session")
    receive_maximum: int = Field(default=1_000, description="unacknowledged inbound at once")
    publish_window: int = Field(default=5_000, description="unacknowledged outbound at once")
    reconnect_min: float = 0.2
    reconnect_max: float = 10.0

    # --- gateway -------------------------------------------------------------------
    gateway_id: str = "gw-1"
    db_path: Path = Path("var/gateway.sqlite")
    partitioned: bool = Field(
        default=False,
        description="serve a share of the building partitions, leased in the PostgreSQL"
        " store, beside other gateways (docs/partitions.md)",
    )
    store: str | None = Field(
        default=None,
        description="a postgresql:// DSN for a store several gateways share (or"
        " sqlite:///path); None: the SQLite file at db_path",
    )
    registry_path: Path = DATA / "registry.sample.yaml"
    policy_path: Path = DATA / "policy-2026-04-01.yaml"
    partners_path: Path = DATA / "partners.sample.yaml"
    max_payload_bytes: int = 16_384
    max_json_depth: int = 16
    max_user_properties: int = Field(default=16, description="MQTT 5 user properties per message")
    max_attempts: int = Field(
        default=3,
        ge=1,
        description="deliveries of one message whose handling never finished (the process "
        "died) before it is set aside on the dead-letter topic",
    )
    max_event_age: float = Field(default=86_400.0, description="seconds; older events are stale")
    max_clock_skew: float = Field(default=300.0, description="seconds an event may be ahead")
    flush_interval: float = Field(default=0.05, description="seconds between store batch writes")
    completed_memory: int = Field(default=1_000_000, description="event ids kept for de-dup")
    statistics_window: float = 3_600.0
    statistics_min_group: int = 5
    statistics_delay: float = Field(
        default=2.0,
        ge=0,
        description="seconds after a window ends before it is published: events still on"
        " their way, or delivered again after a restart, are counted in it",
    )
    analytics_window: float = Field(
        default=3_600.0,
        gt=0,
        description="seconds per analytics window (§5(5)): analytics copies are held, durably,"
        " and released together in shuffled order once their window has ended, with no time"
        " in them finer than the window",
    )
    log_level: str = "INFO"
    log_events: bool = Field(default=True, description="one log line per processed event")
    metrics_interval: float = Field(
        default=5.0, gt=0, description="seconds between retained metrics (health reads them)"
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65_535,
        description="serve Prometheus metrics on http://<metrics_host>:<port>/metrics"
        " (0: any free port); None: not served",
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="address the Prometheus metrics are served on"
    )
    otel_endpoint: str | None = Field(
        default=None,
        description="export a span per event over OTLP/HTTP to <url>/v1/traces (the [otel]"
        " extra); None: OTEL_EXPORTER_OTLP_ENDPOINT if set, else no export",
    )

    # --- provision ledger and resident requests (§8) ----------------------------------
    # APPI keeps a third-party provision record for three years; 1,096 days is three
    # years even across a leap day, so a purge never cuts one short.
    ledger_retention_days: int = Field(
        default=1_096, ge=1, description="days a provision ledger row is kept"
    )
    api_token: SecretStr | None = Field(
        default=None, description="operator bearer token of the HTTP API; required to serve it"
    )
    api_host: str = "127.0.0.1"
    api_port: int = 8080

    # --- the dev stack (`intercom-gateway up`) ------------------------------------------
    state_dir: Path = Field(
        default=Path("var/stack"),
        description="where `up` keeps its broker, accounts, store and logs, and the state"
        " file (stack.json) that the other commands read to find the running stack",
    )

    def ingress_limits(self) -> Limits:
        """The limits of the ingress checks (``core.ingress``) these settings set."""
        from intercom_gateway.core.ingress import Limits  # the core imports no settings

        return Limits(
            max_bytes=self.max_payload_bytes,
            max_depth=self.max_json_depth,
            max_age=timedelta(seconds=self.max_event_age),
            max_skew=timedelta(seconds=self.max_clock_skew),
            max_user_properties=self.max_user_properties,
        )
