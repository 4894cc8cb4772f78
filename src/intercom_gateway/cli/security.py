"""Broker secrets from the command line: ``credentials ...`` (accounts and the ACL) and
``tls init``.

``cli/main.py`` registers both groups on the main command. Passwords are never printed:
they go hashed into the password file and in clear only into ``credentials.json``
(0600), which local clients (gateway, simulators) read.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from intercom_gateway.broker import mosquitto as broker
from intercom_gateway.broker import plugin as broker_plugin
from intercom_gateway.broker.tls import (
    DEFAULT_DNS_NAMES,
    DEFAULT_IP_ADDRESSES,
    DEFAULT_TLS_DIR,
    TlsFiles,
    generate_dev_pki,
)
from intercom_gateway.cli.common import group, settings_of
from intercom_gateway.core.policy import load_partners
from intercom_gateway.core.registry import Registry, load_registry
from intercom_gateway.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


def _registry_options(command: F) -> F:
    command = click.option(
        "--registry",
        "registry_path",
        type=click.Path(path_type=Path, dir_okay=False),
        help="Device registry YAML. Default: $INTERCOM_REGISTRY_PATH or the packaged sample.",
    )(command)
    command = click.option(
        "--partners",
        "partners_path",
        type=click.Path(path_type=Path, dir_okay=False),
        help="Partner registry YAML (one account per service id). "
        "Default: $INTERCOM_PARTNERS_PATH or the packaged sample.",
    )(command)
    return click.option(
        "--fleet/--no-fleet",
        default=True,
        show_default=True,
        help="Include the `fleet` account that may speak for any panel (simulators, "
        "load tests). Use --no-fleet for a real deployment.",
    )(command)


def _secrets_option(command: F) -> F:
    return click.option(
        "--secrets-dir",
        type=click.Path(path_type=Path, file_okay=False),
        help="Where passwd, acl and credentials.json live (git-ignored). "
        "Default: $INTERCOM_SECRETS_DIR or .secrets/broker.",
    )(command)


def _settings() -> Settings:
    return settings_of(click.get_current_context())


def _load(
    registry_path: Path | None, partners_path: Path | None
) -> tuple[Registry, list[str], list[str]]:
    """The registry, the partner services' ids and the distribution contractors' ids."""
    settings = _settings()
    registry = load_registry(registry_path or settings.registry_path)
    partners = load_partners(partners_path or settings.partners_path)
    contractors = [contractor.id for contractor in partners.contractors]
    return registry, [service.id for service in partners.services], contractors


@group()
def credentials() -> None:
    """Broker accounts and the ACL, generated from the device and partner registries.

    Every panel, every partner service and each internal consumer (gateway, cloud,
    analytics, operator, fleet) gets its own account, confined by the ACL to its
    own topics. See docs/security.md for who may read and write what.
    """


@credentials.command("generate")
@_registry_options
@_secrets_option
@click.option("--force", is_flag=True, help="Replace existing credentials (all passwords change).")
def generate(
    registry_path: Path | None,
    partners_path: Path | None,
    fleet: bool,
    secrets_dir: Path | None,
    force: bool,
) -> None:
    """Write the password file (hashed by mosquitto_passwd), the ACL and credentials.json.

    Passwords are random and never printed. Refuses to overwrite existing credentials
    without --force, since every panel and partner would then need new ones.
    """
    directory = secrets_dir or _settings().secrets_dir
    if (directory / "passwd").exists() and not force:
        raise click.ClickException(f"{directory / 'passwd'} exists; pass --force to replace it")
    registry, partner_ids, contractor_ids = _load(registry_path, partners_path)
    creds = broker.generate_credentials(
        directory, registry, partner_ids, fleet=fleet, contractor_ids=contractor_ids
    )
    devices = sum(1 for _ in registry.devices())
    click.echo(
        f"wrote {creds.passwd_file}: {len(creds.passwords)} accounts "
        f"({devices} devices, {len(partner_ids)} partners: {', '.join(partner_ids) or '-'})"
    )
    click.echo(f"wrote {creds.acl_file}")
    click.echo(f"wrote {directory / 'credentials.json'} (0600; clear-text passwords, not shown)")
    click.echo("reload a running broker to apply: kill -HUP <mosquitto pid>")


@credentials.command("rotate")
@click.argument("user")
@_secrets_option
@click.option(
    "--pid",
    type=click.IntRange(min=1),
    help="PID of the running Mosquitto: send it SIGHUP so the new password applies now.",
)
def rotate(user: str, secrets_dir: Path | None, pid: int | None) -> None:
    """Give USER a new random password (never printed).

    The hash goes into passwd, the password into credentials.json. The broker keeps
    accepting the old password until it rereads its files on SIGHUP (--pid, or
    `kill -HUP`); then clients still logged in with the old one are disconnected.
    """
    directory = secrets_dir or _settings().secrets_dir
    broker.rotate_password(directory, user)
    click.echo(f"rotated the password of {user!r} in {directory} (not shown)")
    if pid is None:
        click.echo("the old password works until the broker reloads: kill -HUP <mosquitto pid>")
        return
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as error:
        raise click.ClickException(f"cannot signal process {pid}: {error}") from error
    click.echo(f"sent SIGHUP to {pid}: the new password applies now")


@credentials.command("show-acl")
@_registry_options
def show_acl(registry_path: Path | None, partners_path: Path | None, fleet: bool) -> None:
    """Print the ACL the registries produce (no secrets involved)."""
    registry, partner_ids, contractor_ids = _load(registry_path, partners_path)
    text = broker.acl_text(registry, partner_ids, fleet=fleet, contractor_ids=contractor_ids)
    click.echo(text, nl=False)


@credentials.command("plugin")
@_secrets_option
def plugin(secrets_dir: Path | None) -> None:
    """Build the broker plugin that binds client ids to accounts, into the secrets dir.

    mosquitto.conf loads it from .secrets/broker/clientid_binding.so: an account may
    connect only as `<account>` or `<account>.<suffix>`. Built from its C source with
    the system C compiler and Debian's mosquitto-dev (scripts/setup installs both);
    tests and the demo build it themselves.
    """
    directory = secrets_dir or _settings().secrets_dir
    built = broker_plugin.install_plugin(directory)
    click.echo(f"wrote {built}")
    click.echo("if you start Mosquitto as root it loads this as user mosquitto: chown it")


@group()
def tls() -> None:
    """Certificates for the broker's TLS listener (mosquitto.conf, `listener 8883`)."""


@tls.command("init")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULT_TLS_DIR,
    show_default=True,
    help="Where ca.crt, ca.key, server.crt and server.key go (the paths mosquitto.conf names).",
)
@click.option(
    "--dns",
    "dns_names",
    multiple=True,
    default=DEFAULT_DNS_NAMES,
    show_default=True,
    help="Host name clients connect to; repeat for several.",
)
@click.option(
    "--ip",
    "ip_addresses",
    multiple=True,
    default=DEFAULT_IP_ADDRESSES,
    show_default=True,
    help="IP address clients connect to; repeat for several.",
)
@click.option(
    "--days",
    type=click.IntRange(1, 3650),
    default=825,
    show_default=True,
    help="Validity of the CA and the server certificate.",
)
@click.option(
    "--force", is_flag=True, help="Replace an existing CA (clients must trust the new one)."
)
def init(
    directory: Path,
    dns_names: tuple[str, ...],
    ip_addresses: tuple[str, ...],
    days: int,
    force: bool,
) -> None:
    """Make a development CA and a server certificate signed by it.

    For development and tests only: a deployment installs certificates from the
    operator's CA at the same paths. Clients trust ca.crt (INTERCOM_BROKER_CA_FILE).
    """
    files = TlsFiles(directory)
    if files.exists() and not force:
        raise click.ClickException(f"{files.ca_cert} exists; pass --force to replace it")
    generate_dev_pki(directory, dns_names=dns_names, ip_addresses=ip_addresses, days=days)
    names = ", ".join([*dns_names, *ip_addresses])
    click.echo(f"wrote {files.ca_cert} (clients trust this) and {files.ca_key} (0600)")
    click.echo(f"wrote {files.server_cert} for {names} and {files.server_key} (0600)")


COMMANDS = (credentials, tls)
