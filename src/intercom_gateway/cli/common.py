"""What every command shares: settings, store and broker look-ups, output, and the one
place where an error becomes an exit status.

Exit statuses (README, "Exit codes")::

    0   done; for a check (health, scenario run, load): the answer is yes
    1   the answer is no (unhealthy, an expectation failed, a change refused), or a user
        or configuration error: a file, registry, store, account or dwelling that is
        wrong or missing
    2   usage: an unknown option, a missing argument, a value out of range
    3   the broker or the gateway could not be reached, or did not answer in time
    4   input failed validation (an event, a settings change): the first invalid field
    70  internal error (a bug); --debug or INTERCOM_DEBUG=1 shows the traceback

Every error is one line, ``Error: <what>`` on stderr (click's style); a scenario file's
problems are one line each. ``Group.invoke`` applies the mapping (``describe``) to every
command below it, so a command raises the package's own errors and never catches them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from pydantic import ValidationError

from intercom_gateway.errors import BusError, ConfigError, GatewayError, StoreUnreachable
from intercom_gateway.settings import Settings

if TYPE_CHECKING:
    from intercom_gateway.bus import BrokerAddress
    from intercom_gateway.qa.stackfile import StackState

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

EXIT_NO = 1
EXIT_USER = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INVALID = 4
EXIT_INTERNAL = 70

DEBUG_HINT = "run with --debug (or INTERCOM_DEBUG=1) for the traceback"
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def cli_error(message: str, *, exit_code: int = EXIT_USER) -> click.ClickException:
    """One ``Error:`` line and an exit status from the table above.

    A plain ``click.ClickException`` with its status set on the instance: every error
    class of the package lives in ``errors.py``, which does not import click.
    """
    error = click.ClickException(message)
    error.exit_code = exit_code  # type: ignore[misc]  # a ClassVar in click; ours varies
    return error


def usage_error(message: str) -> click.ClickException:
    """A value out of range, said in one line (click's UsageError adds the usage text)."""
    return cli_error(message, exit_code=EXIT_USAGE)


# --- errors to exit statuses -------------------------------------------------------------


def describe(error: BaseException) -> tuple[int, str]:
    """The exit status and the one-line message for an error a command let through."""
    error = _leaf(error)
    if isinstance(error, ValidationError):
        return EXIT_INVALID, validation_line(error)
    if isinstance(error, BusError | StoreUnreachable):
        return EXIT_UNREACHABLE, _message(error)
    if isinstance(error, GatewayError):
        return _gateway_code(error), _message(error)
    if isinstance(error, ConnectionError | TimeoutError):
        return EXIT_UNREACHABLE, f"cannot reach the broker or the gateway: {_message(error)}"
    if isinstance(error, OSError):
        where = f"{error.filename}: " if error.filename else ""
        return EXIT_USER, f"{where}{error.strerror or _message(error)}"
    if _is_yaml_error(error):
        return EXIT_USER, f"not valid YAML: {_yaml_line(error)}"
    what = _one_line(str(error))
    return EXIT_INTERNAL, f"internal error: {type(error).__name__}{': ' if what else ''}{what}"


def _gateway_code(error: GatewayError) -> int:
    from intercom_gateway.core.ingress import InputRejected
    from intercom_gateway.resident.service import PendingChange

    if isinstance(error, PendingChange):
        return EXIT_UNREACHABLE
    if isinstance(error, ConfigError):
        return EXIT_USER
    if isinstance(error, InputRejected) or isinstance(_cause(error), ValidationError):
        return EXIT_INVALID
    return EXIT_USER


def validation_line(error: ValidationError) -> str:
    """The first invalid field and what is wrong with it, without pydantic's internals."""
    first = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"])
    text = f"{where}: {first['msg']}" if where else str(first["msg"])
    more = error.error_count() - 1
    return text + (f" (and {more} more)" if more else "")


def _message(error: BaseException) -> str:
    """The error's text, a validation or YAML error inside it shortened to one line."""
    text = str(error)
    cause = _cause(error)
    if isinstance(cause, ValidationError):
        text = text.replace(str(cause), validation_line(cause))
    elif cause is not None and _is_yaml_error(cause):
        text = text.replace(str(cause), _yaml_line(cause))
    if getattr(error, "problems", None):  # a scenario file: one line per problem
        return text
    return _one_line(text)


def _cause(error: BaseException) -> BaseException | None:
    # `raise ... from None` hides the context from tracebacks, not from us.
    return error.__cause__ or error.__context__


def _leaf(error: BaseException) -> BaseException:
    """The first real error inside the exception groups a task group raises."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def _is_yaml_error(error: BaseException) -> bool:
    import yaml

    return isinstance(error, yaml.YAMLError)


def _yaml_line(error: BaseException) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if mark is None or problem is None:
        return _one_line(str(error))
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def debugging(ctx: click.Context) -> bool:
    if ctx.find_root().params.get("debug"):
        return True
    return os.environ.get("INTERCOM_DEBUG", "").lower() not in ("", "0", "false", "no")


class Group(click.Group):
    """A command group whose commands' errors become one line and a documented status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as error:
            if debugging(ctx):
                traceback.print_exc()
            code, message = describe(error)
            if code == EXIT_INTERNAL and not debugging(ctx):
                message = f"{message} ({DEBUG_HINT})"
            raise cli_error(message, exit_code=code) from error


def group(**attrs: Any) -> Callable[[Callable[..., Any]], Group]:
    """``click.group`` with the error mapping and the project's help settings."""
    return click.group(cls=Group, context_settings=CONTEXT, **attrs)


# --- settings, stores, brokers -----------------------------------------------------------


def settings_of(ctx: click.Context, **overrides: Any) -> Settings:
    """Environment (INTERCOM_*) first, then the options given on the command line."""
    base: Settings = ctx.obj["settings"] if ctx.obj else Settings()
    given = {key: value for key, value in overrides.items() if value is not None}
    return base.model_copy(update=given) if given else base


def existing_store(path: Path) -> Path:
    """The store's path, if the gateway (or a test) has made one there."""
    if not path.exists():
        raise ConfigError("no store here: has the gateway run?", path=str(path))
    return path


def broker_address(settings: Settings, user: str) -> BrokerAddress:
    """Where to connect as ``user``, with the password `credentials generate` wrote."""
    from intercom_gateway.broker.mosquitto import load_credentials

    return load_credentials(settings.secrets_dir).address(
        user, host=settings.broker_host, port=settings.broker_port
    )


def require_gateway(settings: Settings) -> None:
    """Refuse (one line, exit 3) unless the configured gateway, or a group of partitioned
    gateways, is online on the broker.

    Every command that relies on a gateway calls this first, so that a change never
    goes to a broker no gateway reads (Debian's own Mosquitto on 1883, say).
    """
    from intercom_gateway.broker.mosquitto import OPERATOR
    from intercom_gateway.gateway.presence import expect_gateway_or_group

    address = broker_address(settings, OPERATOR)
    run(lambda: expect_gateway_or_group(address, gateway_id=settings.gateway_id))


def running_stack_of(ctx: click.Context) -> StackState:
    """The dev stack running from the state folder (main read it), or one line saying
    there is none."""
    state = ctx.find_root().obj.get("stack") if ctx.find_root().obj else None
    if state is None:
        where = settings_of(ctx).state_dir
        raise ConfigError(f"no dev stack runs from {where}: `intercom-gateway up` starts one")
    stack: StackState = state
    return stack


def note_own_run(ctx: click.Context, command: str) -> None:
    """One line when a dev stack runs but this command starts a broker and gateway of its
    own: never a silent choice between two systems."""
    root = ctx.find_root().obj
    state = root.get("stack") if root else None
    if state is not None:
        click.echo(
            f"Note: {command} starts its own broker and gateway; the dev stack on"
            f" {state.where} is left alone (--stack uses it)",
            err=True,
        )


def run(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run one coroutine of a command; its errors go to ``Group.invoke`` as they are."""
    return asyncio.run(work())


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


async def stopped_by_signals(
    work: Coroutine[Any, Any, T], received: list[int], *, stop: asyncio.Event | None = None
) -> T | None:
    """Run ``work``; SIGINT, SIGTERM or SIGHUP cancels it, so that every ``async with``
    in it (Mosquitto, the gateway process, the work folder) cleans up on the way out,
    and then returns None with the signal in ``received``. A second signal during the
    cleanup is ignored, and so is any after it while the command finishes (removing its
    temp folder): the cleanup is bounded (the gateway gets SIGKILL if SIGTERM does not
    end it in time). The first signal sets ``stop`` too, for work that watches it:
    it ends even if the cancellation is lost, as Python 3.11's ``wait_for`` can lose one
    that meets the awaited result (gh-86296)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def on_signal(signum: int) -> None:
        if not received:
            if stop is not None:
                stop.set()
            task.cancel()
        received.append(signum)

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await work
    except asyncio.CancelledError:
        if received:
            return None
        raise
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
            if received:
                signal.signal(sig, signal.SIG_IGN)


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


# --- options -------------------------------------------------------------------------------


def options(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Several options as one decorator, in the order they are written."""

    def apply(func: F) -> F:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


broker_options = options(
    click.option("--broker-host", help="Broker host [env INTERCOM_BROKER_HOST]."),
    click.option("--broker-port", type=int, help="Broker port [env INTERCOM_BROKER_PORT]."),
    click.option(
        "--secrets-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Where `credentials generate` wrote the broker accounts "
        "[env INTERCOM_SECRETS_DIR, default .secrets/broker].",
    ),
)


def _given_store(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
    """``--store``: into the command's settings (``settings_of`` starts from them)."""
    if value is not None:
        obj = ctx.ensure_object(dict)
        base: Settings = obj.get("settings") or Settings()
        obj["settings"] = base.model_copy(update={"store": value})


# Every command that takes --db takes --store next to it (db_option below).
store_option = click.option(
    "--store",
    metavar="URL",
    callback=_given_store,
    expose_value=False,
    help="[env INTERCOM_STORE] a postgresql:// DSN for a shared store; default: the "
    "SQLite file of --db",
)
db_option = options(
    click.option(
        "--db",
        "db_path",
        type=click.Path(path_type=Path),
        help="SQLite store file [env INTERCOM_DB_PATH, default var/gateway.sqlite].",
    ),
    store_option,
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
stack_option = click.option(
    "--stack",
    is_flag=True,
    help="Use the running dev stack (`intercom-gateway up`) instead of starting a broker "
    "and gateway of its own.",
)
dwelling_arguments = options(click.argument("building"), click.argument("dwelling"))
seed_option = click.option(
    "--seed", type=int, default=0, show_default=True, help="Same seed, same events."
)


def out_option(default: Path, help: str, *, folder: bool) -> Callable[[F], F]:
    """``--out``: the folder (or the file) a command writes, its default shown."""
    kind = click.Path(file_okay=not folder, dir_okay=folder, path_type=Path)
    return click.option("--out", type=kind, default=default, show_default=True, help=help)


def workdir_option(help: str) -> Callable[[F], F]:
    """``--workdir``: where a self-contained run puts its broker, accounts and store."""
    return click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), help=help)


def registry_option(help: str, *, dir_okay: bool = True) -> Callable[[F], F]:
    """``--registry``: a device registry file, as ``registry_path``."""
    kind = click.Path(exists=True, dir_okay=dir_okay, path_type=Path)
    return click.option("--registry", "registry_path", type=kind, help=help)


def acceleration_option(help: str, *, default: float | None = None) -> Callable[[F], F]:
    """``--acceleration``: simulated seconds per real second."""
    if default is None:
        return click.option("--acceleration", type=float, help=help)
    return click.option("--acceleration", type=float, default=default, show_default=True, help=help)


def running_broker_options(
    *, host: str | None, port: str, secrets: str, folder: bool = True
) -> Callable[[F], F]:
    """``--broker-host`` (with a ``host`` help), ``--broker-port`` and ``--secrets-dir``:
    a broker already running instead of the one a command would start itself."""
    kind = click.Path(file_okay=not folder, path_type=Path)
    port_and_secrets = (
        click.option("--broker-port", type=int, help=port),
        click.option("--secrets-dir", type=kind, help=secrets),
    )
    if host is None:
        return options(*port_and_secrets)
    return options(click.option("--broker-host", help=host), *port_and_secrets)


# --- output --------------------------------------------------------------------------------


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def echo_table(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """Left-aligned columns under upper-case headings; ``(none)`` for no rows."""
    if not rows:
        click.echo("(none)")
        return
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        click.echo("  ".join(str(row[c]).ljust(widths[c]) for c in columns).rstrip())
