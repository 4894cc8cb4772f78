"""Run scenarios against a real Mosquitto and gateway, and judge every expectation.

Self-contained (the default) starts one Mosquitto for the whole run and a fresh gateway,
with its own store, per scenario: a SQLite file in the scenario's folder or, when
``INTERCOM_STORE`` names a PostgreSQL database, a new database on that server, dropped
after (no scenario sees another's consents or completed events). Against a running
broker and gateway (``External``) it only connects. Either way the runner reads every
destination as the ``operator`` account from before the first step, and publishes as
the ``fleet`` account, on the panel topics.

"Does not receive" is decided after a barrier, never after a fixed sleep: in-process,
the runner waits until the gateway has acknowledged every message the steps sent (it
acknowledges only after publishing and storing) and has released every analytics copy
it held (windows of ``ANALYTICS_WINDOW`` seconds), then sends a sentinel through the
broker behind the gateway's output; against an external gateway it sends a probe the
gateway must reject and waits for that rejection, which the gateway publishes after
everything sent before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from intercom_gateway.broker.mosquitto import FLEET, GATEWAY, OPERATOR, Mosquitto
from intercom_gateway.bus import MqttBus
from intercom_gateway.core import topics
from intercom_gateway.core.models import (
    DeviceRole,
    Initialise,
    IntercomApp,
    Register,
    ReturnHomeNotification,
    ServiceUse,
    SettingsChangeBody,
    utc_now,
)
from intercom_gateway.core.registry import Registry
from intercom_gateway.errors import GatewayError, StepFailed
from intercom_gateway.qa.postgres import own_store
from intercom_gateway.qa.runner import Endpoint, RunningGateway, running_gateway, start_broker
from intercom_gateway.qa.scenario import matching
from intercom_gateway.qa.scenario.judge import (
    Collector,
    Evidence,
    ExpectationResult,
    describe_match,
    judge,
    probe_payload,
)
from intercom_gateway.qa.scenario.loader import LoadedScenario
from intercom_gateway.qa.scenario.matching import Sent
from intercom_gateway.qa.scenario.model import (
    BadInputStep,
    RawStep,
    SendStep,
    SettingsSpec,
    SettingsStep,
    Step,
    WaitStep,
)
from intercom_gateway.qa.scenario.world import (
    Outbound,
    World,
    bad_input_messages,
    build_world,
    event_message,
    settings_message,
)
from intercom_gateway.qa.testing import sentinel_topic
from intercom_gateway.store import Store

BARRIER_TIMEOUT = 15.0
# Analytics copies are held until their window ends (§5(5)): a self-contained scenario's
# gateway uses short windows (a scenario's setup.gateway may say otherwise).
ANALYTICS_WINDOW = 0.5
_SENTINEL = sentinel_topic("zz-scenario-barrier")


# --- results -------------------------------------------------------------------------


@dataclass
class ScenarioResult:
    name: str
    path: Path
    description: str
    planned: int = 0  # expectations in the file
    duration: float = 0.0
    expectations: list[ExpectationResult] = field(default_factory=list)
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and all(e.passed for e in self.expectations)

    @property
    def failures(self) -> list[ExpectationResult]:
        return [e for e in self.expectations if not e.passed]


# --- one scenario's connections ------------------------------------------------------------


class Barrier(Protocol):
    async def settle(self, harness: Harness) -> None: ...


@dataclass
class Harness:
    """One scenario's connections, what it sent, and what it saw."""

    world: World
    fleet: MqttBus
    collector: Collector
    barrier: Barrier
    store: Store | None
    refs: dict[str, Sent] = field(default_factory=dict)
    inbound: int = 0  # messages sent on topics the gateway consumes

    async def publish(self, out: Outbound, name: str | None) -> None:
        await self.fleet.publish(out.topic, out.payload)
        if _consumed(out.topic):
            self.inbound += 1
        if name is not None:
            self.refs[name] = Sent(name, out.topic, out.payload, out.ident, time.monotonic())

    @property
    def evidence(self) -> Evidence:
        return Evidence(self.collector, self.refs, self.store)


def _consumed(topic: str) -> bool:
    return any(topics.matches(f, topic) for f in topics.INBOUND_FILTERS)


class InProcessBarrier:
    """Gateway acknowledged everything, then a sentinel behind its output."""

    def __init__(self, running: RunningGateway, gateway_account: MqttBus) -> None:
        self.running = running
        self.account = gateway_account

    async def settle(self, harness: Harness) -> None:
        try:
            await self.running.wait_processed(harness.inbound, timeout=BARRIER_TIMEOUT)
        except TimeoutError:
            done = self.running.gateway.metrics.acked
            raise StepFailed(
                f"the gateway finished {done} of the {harness.inbound} messages sent "
                f"within {BARRIER_TIMEOUT:.0f} s"
            ) from None
        try:
            await asyncio.wait_for(self.running.gateway.wait_analytics_released(), BARRIER_TIMEOUT)
        except TimeoutError:
            held = self.running.gateway.analytics.held
            raise StepFailed(
                f"the gateway still held {held} analytics copies after {BARRIER_TIMEOUT:.0f} s"
                " (is setup.gateway.analytics_window longer than that?)"
            ) from None
        token = uuid.uuid4().hex
        await self.account.publish(_SENTINEL, token.encode())
        await _await_token(harness.collector, token, "the sentinel")


class ProbeBarrier:
    """A message the gateway must reject, published after everything else."""

    async def settle(self, harness: Harness) -> None:
        token = uuid.uuid4().hex
        building = harness.world.registry.buildings[0]
        # A lobby panel names no dwelling of its own, so no dwelling's consent can
        # withhold the echo that carries the token back.
        lobby = [d for d in building.devices if d.role is DeviceRole.LOBBY_PANEL]
        device = (lobby or building.devices)[0].id
        topic = topics.panel_events(building.id, device, "visitor")
        await harness.fleet.publish(topic, probe_payload(token))
        await _await_token(harness.collector, token, "the gateway's rejection of the probe")


async def _await_token(collector: Collector, token: str, what: str) -> None:
    deadline = time.monotonic() + BARRIER_TIMEOUT
    if not await collector.wait_until(lambda: token in collector.tokens, deadline=deadline):
        raise StepFailed(f"{what} did not come back within {BARRIER_TIMEOUT:.0f} s")


# --- where scenarios run ---------------------------------------------------------------


class Environment(Protocol):
    def harness(
        self, loaded: LoadedScenario, workdir: Path
    ) -> contextlib.AbstractAsyncContextManager[Harness]: ...


class SelfContained:
    """One Mosquitto for the run; a fresh gateway and store per scenario."""

    def __init__(self, broker: Mosquitto) -> None:
        self.broker = broker

    @staticmethod
    @contextlib.contextmanager
    def start(workdir: Path) -> Iterator[SelfContained]:
        # Steps publish as the fleet account and the runner reads as the operator, so
        # the broker needs no per-device or per-partner accounts.
        with start_broker(workdir, Registry(buildings=()), ()) as broker:
            yield SelfContained(broker)

    @contextlib.asynccontextmanager
    async def harness(self, loaded: LoadedScenario, workdir: Path) -> AsyncIterator[Harness]:
        world = build_world(loaded.scenario, source=loaded.path, workdir=workdir)
        async with own_store(f"scenario_{workdir.name}") as store:
            overrides = {
                "store": store,
                "partners_path": world.partners_path,
                "analytics_window": ANALYTICS_WINDOW,
                **world.overrides,
            }
            async with self._gateway(world, workdir, overrides) as harness:
                yield harness

    @contextlib.asynccontextmanager
    async def _gateway(
        self, world: World, workdir: Path, overrides: dict[str, Any]
    ) -> AsyncIterator[Harness]:
        async with (
            running_gateway(self.broker, world.registry, workdir, **overrides) as running,
            running.client(OPERATOR) as operator,
            running.client(FLEET) as fleet,
            running.client(GATEWAY) as account,
        ):
            barrier = InProcessBarrier(running, account)
            async with _collecting(operator, world, extra=(_SENTINEL,)) as collector:
                yield Harness(world, fleet, collector, barrier, running.gateway.store)


class External:
    """A broker and gateway someone else runs; consent is set up through the panels."""

    def __init__(self, *, host: str, port: int, secrets_dir: Path) -> None:
        self.broker = Endpoint.load(secrets_dir, host=host, port=port)

    @contextlib.asynccontextmanager
    async def harness(self, loaded: LoadedScenario, workdir: Path) -> AsyncIterator[Harness]:
        world = build_world(loaded.scenario, source=loaded.path, workdir=workdir)
        suffix = uuid.uuid4().hex[:8]
        observing, publishing = self.broker.address(OPERATOR), self.broker.address(FLEET)
        async with (
            MqttBus(observing, client_id=observing.client_id(f"scenario-{suffix}")) as operator,
            MqttBus(publishing, client_id=publishing.client_id(f"scenario-{suffix}")) as fleet,
            _collecting(operator, world) as collector,
        ):
            harness = Harness(world, fleet, collector, ProbeBarrier(), None)
            for out in consent_messages(world):
                await harness.publish(out, None)
            yield harness


def consent_messages(world: World) -> list[Outbound]:
    """Settings changes that bring a running gateway's dwellings to the setup's consent."""
    out: list[Outbound] = []
    partner_ids = [s.id for s in world.partners.services]
    for building, dwelling in world.registry.dwellings():
        consent = dwelling.consent
        if consent is None:
            continue
        changes: list[SettingsChangeBody] = [Register(policy_version=consent.policy_version)]
        changes.append(ReturnHomeNotification(enabled=consent.return_home_enabled))
        changes.append(IntercomApp(linked=consent.intercom_app))
        changes += [ServiceUse(partner_id=p, used=p in consent.services) for p in partner_ids]
        if not consent.registered:
            changes = [Initialise()]
        for change in changes:
            spec = SettingsSpec(dwelling=dwelling.id, building=building.id, change=change)
            out.append(settings_message(spec, world))
    return out


@contextlib.asynccontextmanager
async def _collecting(
    operator: MqttBus, world: World, *, extra: Sequence[str] = ()
) -> AsyncIterator[Collector]:
    partner_ids = [s.id for s in world.partners.services]
    contractor_ids = [c.id for c in world.partners.contractors]
    collector = Collector(
        matching.destination_filters(partner_ids, contractor_ids), sentinel=_SENTINEL
    )
    await operator.subscribe(*collector.filters.values(), *extra)
    task = asyncio.create_task(collector.run(operator), name="scenario-collector")
    try:
        yield collector
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, GatewayError):
            await task


# --- running ---------------------------------------------------------------------------


async def run_scenarios(
    scenarios: Sequence[LoadedScenario],
    environment: Environment,
    *,
    workdir: Path,
    on_done: Callable[[ScenarioResult], None] | None = None,
) -> list[ScenarioResult]:
    results = []
    for index, loaded in enumerate(scenarios):
        result = await run_scenario(loaded, environment, workdir=workdir / f"{index:03d}")
        if on_done is not None:
            on_done(result)
        results.append(result)
    return results


async def run_scenario(
    loaded: LoadedScenario, environment: Environment, *, workdir: Path
) -> ScenarioResult:
    scenario = loaded.scenario
    result = ScenarioResult(
        scenario.name, loaded.path, scenario.description, planned=len(scenario.expect)
    )
    began = time.monotonic()
    try:
        async with environment.harness(loaded, workdir) as harness:
            result.expectations, result.error = await _play(loaded, harness)
    except (GatewayError, OSError) as error:
        result.error = f"{type(error).__name__}: {error}"
    result.duration = time.monotonic() - began
    return result


async def _play(
    loaded: LoadedScenario, harness: Harness
) -> tuple[list[ExpectationResult], str | None]:
    started, start = time.monotonic(), utc_now()
    for index, step in enumerate(loaded.scenario.steps):
        if step.at_ms is not None:
            await asyncio.sleep(max(0.0, started + step.at_ms / 1000 - time.monotonic()))
        try:
            await _do(step, harness, start=start)
        except StepFailed as error:
            return [], f"step {index + 1} (line {loaded.lines.line(('steps', index))}): {error}"
    steps_end = time.monotonic()
    unsettled: str | None = None
    try:
        await harness.barrier.settle(harness)
    except StepFailed as error:
        unsettled = str(error)
    results = []
    for index, expectation in enumerate(loaded.scenario.expect):
        result = await judge(
            expectation, harness.evidence, steps_end=steps_end, unsettled=unsettled
        )
        result.index, result.line = index, loaded.lines.line(("expect", index))
        results.append(result)
    return results, unsettled


async def _do(step: Step, harness: Harness, *, start: Any) -> None:
    world = harness.world
    if isinstance(step, SendStep):
        out = event_message(step.send, world, now=utc_now(), start=start)
        await harness.publish(out, step.send.name)
    elif isinstance(step, SettingsStep):
        await harness.publish(settings_message(step.settings, world), step.settings.name)
    elif isinstance(step, BadInputStep):
        seed = random.getrandbits(32)  # fresh ids: a long-running gateway remembers old ones
        spec = step.bad_input
        for out in bad_input_messages(spec.kind, world, now=utc_now(), seed=seed):
            await harness.publish(out, spec.name)
    elif isinstance(step, RawStep):
        raw = step.raw
        text = raw.payload if raw.payload is not None else _json(raw.json_payload)
        await harness.publish(Outbound(raw.topic, text.encode(), None), raw.name)
    elif isinstance(step, WaitStep):
        await _wait(step, harness)


async def _wait(step: WaitStep, harness: Harness) -> None:
    wait = step.wait
    if wait.ms is not None:
        await asyncio.sleep(wait.ms / 1000)  # a timed step the author asked for
    elif wait.processed:
        await harness.barrier.settle(harness)
    elif wait.until is not None:
        until, evidence = wait.until, harness.evidence
        deadline = time.monotonic() + wait.timeout_ms / 1000
        if not await harness.collector.wait_until(
            lambda: bool(evidence.matching(until.destination, until.match)), deadline=deadline
        ):
            seen = evidence.seen(until.destination, until.match)
            raise StepFailed(
                f"waited {wait.timeout_ms} ms for {until.destination} to receive "
                f"{describe_match(until.match)}; " + "; ".join(seen)
            )


def _json(value: Any) -> str:
    return json.dumps(value)
