"""The operator's commands: run the gateway, check its health, explain its decisions,
export its contract (JSON Schemas, AsyncAPI), and keep the provision ledger's retention."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from intercom_gateway.cli.common import (
    EXIT_NO,
    broker_address,
    broker_options,
    db_option,
    echo_json,
    existing_store,
    group,
    out_option,
    registry_option,
    run,
    settings_of,
    stop_on_signals,
    usage_error,
)
from intercom_gateway.core import topics
from intercom_gateway.errors import ConfigError

# A century: longer than any retention a law asks for, and far from the end of the
# calendar, so "now minus the retention" can always be computed.
MAX_RETENTION_DAYS = 36_525
_HEALTH_TOPICS = (topics.STATUS, topics.METRICS)


@click.command("run")
@broker_options
@click.option("--gateway-id", help="Client id and name of this gateway [default gw-1].")
@db_option
@registry_option("Device registry YAML [env INTERCOM_REGISTRY_PATH, default: the packaged sample].")
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(exists=True, path_type=Path),
    help="Privacy policy YAML [env INTERCOM_POLICY_PATH, default: the packaged policy].",
)
@click.option(
    "--partners",
    "partners_path",
    type=click.Path(exists=True, path_type=Path),
    help="Partner registry YAML [env INTERCOM_PARTNERS_PATH, default: the packaged sample].",
)
@click.option(
    "--partitioned",
    is_flag=True,
    default=None,
    help="Serve a share of the 64 building partitions, leased in the PostgreSQL store "
    "(--store), beside other gateways started the same way [env INTERCOM_PARTITIONED] "
    "(README, 'Several gateways').",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65_535),
    help="Serve Prometheus metrics on http://<metrics-host>:PORT/metrics (0: any free port)"
    " [env INTERCOM_METRICS_PORT; default: not served] (README, 'Metrics and tracing').",
)
@click.option(
    "--metrics-host",
    help="Address to serve the metrics on [env INTERCOM_METRICS_HOST, default 127.0.0.1].",
)
@click.option(
    "--otel-endpoint",
    help="Export a span per event over OTLP/HTTP to URL/v1/traces (needs the [otel] extra)"
    " [env INTERCOM_OTEL_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT; default: no export]"
    " (README, 'Metrics and tracing').",
)
@click.option("--share-group", hidden=True, help="Retired: refused (issue #17).")
@click.pass_context
def run_command(ctx: click.Context, /, share_group: str | None, **options: Any) -> None:
    """Run the gateway until SIGTERM or Ctrl-C (it finishes in-flight events first).

    With --partitioned, several gateways share the buildings: each serves the partitions
    it holds a lease on, and takes over those of a gateway that stops or dies.
    SIGHUP (not --partitioned): take the policy, partner and registry files up again
    without a restart, recorded as the next configuration revision (`config apply`).
    """
    from intercom_gateway.gateway.run import run_gateway, settle_heap
    from intercom_gateway.settings import RETIRED

    if share_group is not None:
        raise usage_error(f"--share-group is no longer accepted: {RETIRED['INTERCOM_SHARE_GROUP']}")
    settings = settings_of(ctx, **options)
    _not_the_stacks_gateway(ctx, settings)
    if settings.partitioned:
        from intercom_gateway.gateway.otel import export_endpoint

        if export_endpoint(settings) is not None:
            raise ConfigError(
                "OpenTelemetry export is not built for --partitioned yet:"
                " unset --otel-endpoint and OTEL_EXPORTER_OTLP_ENDPOINT"
            )

    async def serve() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        if settings.partitioned:
            from intercom_gateway.gateway.partitioned import run_partitioned

            metrics = await run_partitioned(settings, stop=stop, ready=settle_heap)
        else:
            metrics = await run_gateway(
                settings, stop=stop, ready=settle_heap, reload_on_sighup=True
            )
        click.echo(json.dumps(metrics.snapshot()), err=True)

    run(serve)


def _not_the_stacks_gateway(ctx: click.Context, settings: Any) -> None:
    """Refuse to start a second gateway with the dev stack's gateway id on its broker:
    the two would take the client id from each other in turn."""
    import os

    stack = ctx.obj.get("stack") if ctx.obj else None
    if stack is None or not stack.gateway or stack.gateway_pid in (None, os.getpid()):
        return
    same_broker = (settings.broker_host, settings.broker_port) == (
        stack.broker_host,
        stack.broker_port,
    )
    if same_broker and settings.gateway_id == stack.gateway_id:
        raise ConfigError(
            f"the dev stack in {stack.state_dir} already runs gateway {stack.gateway_id!r}"
            f" on {stack.where} (pid {stack.gateway_pid}): use its gateway, start the"
            " stack with `up --no-gateway`, or give this one another --gateway-id"
        )


@click.command()
@broker_options
@click.option(
    "--timeout",
    type=float,
    default=5.0,
    show_default=True,
    help="Seconds to wait for the retained status and metrics.",
)
@click.option(
    "--stall-after",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds a message may wait for its acknowledgement before the gateway counts as stuck.",
)
@click.option(
    "--group",
    is_flag=True,
    help="Partitioned gateways: every gateway's status and partitions; exit 0 only if the "
    "online ones serve all 64 partitions, none twice.",
)
@click.pass_context
def health(
    ctx: click.Context, /, timeout: float, stall_after: float, group: bool, **options: Any
) -> None:
    """Exit 0 if the gateway is online and making progress; print its status and metrics.

    Online alone is not enough: its retained metrics must be fresh (a hung loop stops
    publishing them) and no message may have waited longer than --stall-after. A
    partitioned gateway (INTERCOM_PARTITIONED) is read on its own topics,
    gateway/v1/<gateway id>/status and metrics; --group judges the whole group.
    """
    from intercom_gateway.broker.mosquitto import OPERATOR
    from intercom_gateway.bus import MqttBus
    from intercom_gateway.core.health import verdict
    from intercom_gateway.core.models import utc_now
    from intercom_gateway.errors import ConnectFailed
    from intercom_gateway.gateway.presence import judge, refusal

    settings = settings_of(ctx, **options)
    address = broker_address(settings, OPERATOR)
    if group:
        _group_health(address, timeout)
        return
    wanted = _HEALTH_TOPICS
    if settings.partitioned:
        gateway_id = settings.gateway_id
        wanted = (topics.gateway_status(gateway_id), topics.gateway_metrics(gateway_id))

    async def check() -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        client_id = address.client_id(f"health-{uuid.uuid4().hex[:8]}")
        try:
            async with MqttBus(address, client_id=client_id) as bus:
                await bus.subscribe(*wanted)

                async def read() -> None:
                    async for message in bus.messages():
                        found[message.topic] = bytes(message.payload)
                        if len(found) == 2:
                            return

                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(read(), timeout)
        except ConnectFailed as error:
            raise refusal(address, error) from None
        return found

    found = run(check)
    # Not our gateway's broker (or none has served it): one line, exit 3. Our gateway
    # offline is an answer, not an error: unhealthy, exit 1.
    where = f"{address.host}:{address.port}"
    if not settings.partitioned:
        judge(where, found.get(topics.STATUS), gateway_id=settings.gateway_id, offline_ok=True)
    status, metrics = (json.loads(found[t]) if t in found else None for t in wanted)
    click.echo(json.dumps({"status": status, "metrics": metrics}, indent=2))
    result = verdict(status, metrics, now=utc_now(), stall_after=stall_after)
    click.echo(f"health: {result.reason}", err=True)
    if not result.healthy:
        sys.exit(EXIT_NO)


def _group_health(address: Any, timeout: float) -> None:
    from intercom_gateway.gateway.group import judge_group, read_group

    gateways = run(lambda: read_group(address, timeout=timeout))
    result = judge_group(gateways)
    click.echo(json.dumps({"gateways": gateways}, indent=2))
    click.echo(f"health: {result.reason}", err=True)
    if not result.healthy:
        sys.exit(EXIT_NO)


@click.command()
@click.argument("event_file", type=click.File("rb"), required=False)
@click.option("--event-id", help="Explain a past event from the decision log instead.")
@click.option(
    "--consent",
    "consent_file",
    type=click.File("rb"),
    help="Consent state as JSON (default: the dwelling's consent in the store).",
)
@db_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def explain(
    ctx: click.Context,
    event_file: Any,
    event_id: str | None,
    consent_file: Any,
    db_path: Path | None,
    as_json: bool,
) -> None:
    """Show, per destination, whether an event is forwarded and the rule or reason why.

    EVENT_FILE is an event as a panel sends it ('-' for stdin). With --event-id the
    answer comes from the decision log: where that event went, and why not elsewhere.
    An event that is not valid is refused with its first invalid field (exit 4).
    """
    from intercom_gateway.gateway.explain import explain_event, explain_logged

    settings = settings_of(ctx, db_path=db_path)
    if event_id is not None:
        text = run(lambda: explain_logged(settings, event_id, as_json=as_json))
    elif event_file is not None:
        consent = consent_file.read() if consent_file is not None else None
        text = run(lambda: explain_event(settings, event_file.read(), consent, as_json=as_json))
    else:
        raise click.UsageError("give an EVENT_FILE (or '-') or --event-id")
    click.echo(text)


@click.command()
@out_option(Path("schemas"), "Folder to write the JSON Schemas into.", folder=True)
def schemas(out: Path) -> None:
    """Export the JSON Schema of every event, settings change and output envelope."""
    from intercom_gateway.contract.schemas import write_schemas

    for path in write_schemas(out):
        click.echo(path)


@click.command("asyncapi")
@out_option(
    Path("docs/asyncapi.yaml"), "Where to write the document ('-' for stdout).", folder=False
)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if --out is not current.")
@click.pass_context
def asyncapi(ctx: click.Context, out: Path, check: bool) -> None:
    """Generate the AsyncAPI 3.0 document of every topic, from the models and registries.

    Validate it with the official parser: `cd tools/asyncapi && npm ci && npm run validate`.
    """
    from intercom_gateway.contract.asyncapi import default_document

    text = default_document(settings_of(ctx))
    if check:
        current = out.read_text(encoding="utf-8") if out.exists() else None
        if current != text:
            raise click.ClickException(f"{out} is not current: run `intercom-gateway asyncapi`")
        click.echo(f"{out} is current")
    elif str(out) == "-":
        click.echo(text, nl=False)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        click.echo(out)


@group()
def ledger() -> None:
    """The provision ledger (§8, APPI): retention."""


@ledger.command("purge")
@click.option(
    "--older-than-days",
    type=click.IntRange(1, MAX_RETENTION_DAYS),
    help="Retention in days [env INTERCOM_LEDGER_RETENTION_DAYS, default 1096: three years].",
)
@db_option
@click.pass_context
def purge(ctx: click.Context, older_than_days: int | None, db_path: Path | None) -> None:
    """Delete ledger rows older than the retention period, and only those."""
    from intercom_gateway.core.models import utc_now
    from intercom_gateway.store.opening import open_store, sqlite_path

    settings = settings_of(ctx, db_path=db_path, ledger_retention_days=older_than_days)
    if settings.ledger_retention_days > MAX_RETENTION_DAYS:  # from the environment
        raise usage_error(
            f"INTERCOM_LEDGER_RETENTION_DAYS={settings.ledger_retention_days}"
            f" is more than {MAX_RETENTION_DAYS} days (100 years)"
        )
    if (path := sqlite_path(settings)) is not None:
        existing_store(path)
    before = utc_now() - timedelta(days=settings.ledger_retention_days)

    async def go() -> int:
        async with open_store(settings) as store:
            return await store.purge_ledger(before=before)

    deleted = run(go)
    days = settings.ledger_retention_days
    echo_json({"deleted": deleted, "before": before.isoformat(), "days": days})


COMMANDS = (run_command, health, explain, schemas, asyncapi, ledger)
