"""A distribution contractor's command (§2(1), §5(1)①): post a notice or a survey to a
building's panels, and optionally play the residents who read and answer it."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import click

from intercom_gateway.cli.common import (
    EXIT_NO,
    acceleration_option,
    broker_address,
    broker_options,
    require_gateway,
    run,
    seed_option,
    settings_of,
    stop_on_signals,
)


@click.command()
@broker_options
@click.option(
    "--contractor",
    default="kanri-kumiai-b001",
    show_default=True,
    help="The contractor (and broker account) that sends it.",
)
@click.option("--building", default="b001", show_default=True, help="The building addressed.")
@click.option(
    "--dwelling",
    "dwellings",
    multiple=True,
    help="A dwelling addressed (repeatable); none: every dwelling of the building.",
)
@click.option(
    "--kind",
    type=click.Choice(["notice", "survey"]),
    default="notice",
    show_default=True,
    help="A notice to read, or a survey to answer.",
)
@click.option("--id", "distribution_id", help="Distribution id [default: a new one].")
@click.option("--title", default="Notice from the management", show_default=True, help="Title.")
@click.option("--body", default="Please read this notice.", show_default=True, help="Text.")
@click.option(
    "--question",
    "questions",
    multiple=True,
    help="A yes/no question of a survey (repeatable) [default: one question].",
)
@click.option(
    "--residents",
    "resident_seconds",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Then play the residents for this many seconds: panels read and answer (as the"
    " `fleet` account).",
)
@seed_option
@acceleration_option("Simulated seconds per real second for the residents.", default=3600.0)
@click.pass_context
def distribute(
    ctx: click.Context,
    /,
    contractor: str,
    building: str,
    dwellings: tuple[str, ...],
    kind: str,
    distribution_id: str | None,
    title: str,
    body: str,
    questions: tuple[str, ...],
    resident_seconds: float,
    seed: int,
    acceleration: float,
    **options: Any,
) -> None:
    """Post a notice or a survey as a distribution contractor and print the gateway's answer.

    The gateway delivers it to the dwelling panels of the addressed dwellings that are
    registered, and sends the contractor the read receipts and answers of its own
    distributions on contractors/<contractor>/v1/<building>/<dwelling>/<event type>.
    Exits 1 if the gateway refuses it.
    """
    from intercom_gateway.bus import MqttBus
    from intercom_gateway.simulators.distribution import notice, post, residents, survey

    settings = settings_of(ctx, **options)
    require_gateway(settings)
    name = distribution_id or f"{kind}-{uuid.uuid4().hex[:8]}"
    addressed = dwellings or None
    made = (
        notice(name, building, addressed, title=title, body=body)
        if kind == "notice"
        else survey(
            name, building, addressed, title=title, body=body, questions=questions or ("Agree?",)
        )
    )

    async def go() -> bool:
        address = broker_address(settings, contractor)
        stop, ready = asyncio.Event(), asyncio.Event()
        async with contextlib.AsyncExitStack() as stack:
            bus = await stack.enter_async_context(
                MqttBus(address, client_id=address.client_id(uuid.uuid4().hex[:8]))
            )
            playing = None
            if resident_seconds:
                fleet = broker_address(settings, "fleet")
                panels = await stack.enter_async_context(
                    MqttBus(fleet, client_id=fleet.client_id(f"residents-{uuid.uuid4().hex[:8]}"))
                )
                playing = asyncio.create_task(
                    residents(panels, seed=seed, acceleration=acceleration, stop=stop, ready=ready)
                )
                await ready.wait()  # the panels listen before the distribution goes out
            ack = await post(bus, contractor, made)
            click.echo(ack.model_dump_json(indent=2))
            if playing is not None:
                stop_on_signals(stop)
                asyncio.get_running_loop().call_later(resident_seconds, stop.set)
                sent = await playing
                click.echo(f"residents sent: {dict(sent) or 'nothing'}")
        return ack.accepted

    if not run(go):
        ctx.exit(EXIT_NO)


COMMANDS = (distribute,)
