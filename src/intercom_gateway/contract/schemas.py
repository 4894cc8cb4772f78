"""JSON Schemas of everything on the wire, generated from the pydantic models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from intercom_gateway.core.configuration import ConfigAck, ConfigNotice
from intercom_gateway.core.distributions import (
    Distribution,
    DistributionAck,
    PanelDistribution,
)
from intercom_gateway.core.models import (
    EVENT_ADAPTER,
    EVENT_MODELS,
    SETTINGS_ADAPTER,
    ConsentNotice,
    Forwarded,
    GatewayStatus,
    PartitionedStatus,
    Receipt,
    Rejection,
    SettingsAck,
)


def all_schemas() -> dict[str, dict[str, Any]]:
    """Schema name -> JSON Schema; ``event`` is the discriminated union of all kinds."""
    found: dict[str, dict[str, Any]] = {"event": EVENT_ADAPTER.json_schema()}
    for event_type, model in EVENT_MODELS.items():
        found[f"event.{event_type.value}"] = model.model_json_schema()
    found["settings-change"] = SETTINGS_ADAPTER.json_schema()
    found["settings-ack"] = SettingsAck.model_json_schema()
    found["forwarded"] = Forwarded.model_json_schema()
    found["rejection"] = Rejection.model_json_schema()
    found["receipt"] = Receipt.model_json_schema()
    found["gateway-status"] = GatewayStatus.model_json_schema()
    found["partitioned-status"] = PartitionedStatus.model_json_schema()
    found["config-notice"] = ConfigNotice.model_json_schema()  # §10
    found["config-ack"] = ConfigAck.model_json_schema()
    found["consent-notice"] = ConsentNotice.model_json_schema()
    found["distribution"] = Distribution.model_json_schema()  # §2(1), from a contractor
    found["distribution-ack"] = DistributionAck.model_json_schema()
    found["panel-distribution"] = PanelDistribution.model_json_schema()
    for name, schema in found.items():
        schema.setdefault("$schema", "https://json-schema.org/draft/2020-12/schema")
        schema.setdefault("$id", f"urn:intercom-gateway:schema:{name}")
    return found


def write_schemas(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in all_schemas().items():
        path = folder / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written
