"""The project's ``mosquitto.conf``, adapted only for the port, the paths and the
credentials (``render_config``)."""

from __future__ import annotations

from pathlib import Path

from intercom_gateway.broker.accounts import Credentials
from intercom_gateway.broker.bridge import Bridge, render_bridge
from intercom_gateway.broker.tls import TlsFiles
from intercom_gateway.errors import ConfigError

_PATH_DIRECTIVES = {"password_file", "acl_file", "persistence_location", "plugin"}
_TLS_FILE_DIRECTIVES = {"cafile", "certfile", "keyfile"}
# Options that only mean something on a TLS listener: dropped with it.
_TLS_DIRECTIVES = _TLS_FILE_DIRECTIVES | {"require_certificate", "tls_version", "capath"}


def render_config(
    template: str,
    *,
    port: int,
    data_dir: Path,
    credentials: Credentials,
    plugin: Path,
    host: str = "127.0.0.1",
    tls_port: int | None = None,
    tls: TlsFiles | None = None,
    bridge: Bridge | None = None,
) -> str:
    """The project's configuration with only port, paths and credentials changed.

    ``listener 1883`` moves to ``port`` and ``listener 8883`` (TLS) to ``tls_port``,
    both bound to ``host``. Without ``tls`` the TLS listener and its options are
    left out, since Mosquitto would exit on certificate files that do not exist.
    ``plugin`` is the built client-id binding plugin (``broker_plugin``); a
    configuration without its ``plugin`` line is refused rather than run unbound.
    ``bridge``: a shard broker's bridge to the central one (``broker.bridge``), after
    every other option, since Mosquitto reads a bridge's options up to the next
    ``connection``.
    """
    replacements = {
        "password_file": str(credentials.passwd_file),
        "acl_file": str(credentials.acl_file),
        "persistence_location": f"{data_dir}/",
        "plugin": str(plugin),
    }
    if tls is not None:
        replacements |= {
            "cafile": str(tls.ca_cert),
            "certfile": str(tls.server_cert),
            "keyfile": str(tls.server_key),
        }
    lines = [
        _render_line(line, replacements, port, tls_port, host) for line in template.splitlines()
    ]
    rendered = "\n".join(line for line in lines if line is not None) + "\n"
    if bridge is not None:
        rendered += "\n" + render_bridge(bridge)
    if f"listener {port} " not in rendered:
        raise ConfigError("mosquitto.conf has no `listener 1883` line to adapt")
    if tls is not None and f"listener {tls_port} " not in rendered:
        raise ConfigError("mosquitto.conf has no `listener 8883` (TLS) line to adapt")
    if f"\nplugin {plugin}\n" not in f"\n{rendered}":
        raise ConfigError("mosquitto.conf has no `plugin` line for the client-id binding")
    return rendered


def _render_line(
    line: str, replacements: dict[str, str], port: int, tls_port: int | None, host: str
) -> str | None:
    words = line.split()
    directive = words[0] if words else ""
    if directive == "listener" and words[1:2] == ["1883"]:
        return f"listener {port} {host}"
    if directive == "listener" and words[1:2] == ["8883"]:
        return f"listener {tls_port} {host}" if "cafile" in replacements else None
    if directive in _TLS_DIRECTIVES and "cafile" not in replacements:
        return None
    if directive in _PATH_DIRECTIVES or directive in _TLS_FILE_DIRECTIVES:
        return f"{directive} {replacements[directive]}"
    return line
