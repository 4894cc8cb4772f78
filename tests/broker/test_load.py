"""A short self-contained load run: its own Mosquitto and gateway process, real traffic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from intercom_gateway.core.policy import load_partners, load_policy
from intercom_gateway.core.registry import generate_registry
from intercom_gateway.qa.load import LoadPlan, Progress, passed, run_load
from intercom_gateway.settings import Settings


async def test_a_short_load_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    settings = Settings()
    policy = load_policy(settings.policy_path)
    partners = load_partners(settings.partners_path, policy=policy)
    registry = generate_registry(
        buildings=2, dwellings=50, services=tuple(s.id for s in partners.services)
    )
    seen: list[Progress] = []
    plan = LoadPlan(rate=300.0, duration=None, events=300, settle=30.0)

    data = await run_load(
        plan,
        registry=registry,
        policy=policy,
        partners=partners,
        out_dir=tmp_path / "out",
        workdir=tmp_path / "work",
        progress=seen.append,
    )

    assert data["sent"] == 300
    assert passed(data), _why(data)
    assert data["complete"]
    cloud = data["destinations"]["cloud"]
    assert cloud["expected"] == cloud["delivered"] == 300  # §1(4): every valid event
    assert data["fleet"]["dwellings"] == 100
    assert any(name.startswith("partner:") for name in data["destinations"])
    for name, row in data["destinations"].items():
        latency = row["latency_ms"]
        assert row["lost"] == row["duplicates"] == row["unexpected"] == 0, name
        assert latency["count"] == row["delivered"]
        # Plausible: positive, ordered, and under the settle time (a shared CI machine
        # can be slow, so no tighter bound than that).
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"] < 30_000
    assert data["analytics"]["expected"] == data["analytics"]["received"] > 0
    _check_files(data)
    assert seen and seen[-1].phase == "done" and seen[-1].sent == 300


def _why(data: dict[str, Any]) -> str:
    keys = ("lost", "duplicates", "unexpected", "publish_failed", "rejected", "analytics")
    return json.dumps({k: data[k] for k in keys} | {"lost_sample": data["lost_sample"][:5]})


def _check_files(data: dict[str, Any]) -> None:
    written = json.loads(Path(data["files"]["json"]).read_text(encoding="utf-8"))
    assert written["destinations"] == data["destinations"]
    assert Path(data["files"]["histogram"]).read_bytes()[:4] == b"\x89PNG"
