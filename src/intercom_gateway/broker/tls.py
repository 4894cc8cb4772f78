"""A development certificate authority and a server certificate for the TLS listener.

Made with the ``openssl`` command line tool (the ``cryptography`` package is not a
dependency, and Debian's Mosquitto needs OpenSSL anyway). The CA is for development
and tests only: a deployment uses certificates from the operator's own CA, placed
at the same paths (``mosquitto.conf``).

Keys are P-256 (fast to make, so every test broker can have its own), and the
extensions are those a strict verifier asks for: CA:TRUE with keyCertSign on the
CA; serverAuth, CA:FALSE and subjectAltName on the server certificate, since
clients match the host name against the SAN, never the CN.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from intercom_gateway.errors import BrokerError, ConfigError

DEFAULT_TLS_DIR = Path(".secrets/tls")
DEFAULT_DNS_NAMES = ("localhost",)
DEFAULT_IP_ADDRESSES = ("127.0.0.1",)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Where the CA and the server certificate live (names fixed by ``mosquitto.conf``)."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    def exists(self) -> bool:
        return all(p.is_file() for p in (self.ca_cert, self.server_cert, self.server_key))


_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = {san}
"""


def subject_alt_names(dns_names: Sequence[str], ip_addresses: Sequence[str]) -> str:
    """The SAN value; refuses what OpenSSL would otherwise put in a certificate."""
    if not dns_names and not ip_addresses:
        raise ConfigError("a server certificate needs at least one host name or IP address")
    for name in dns_names:
        if not name or any(c in name for c in ", \n/"):
            raise ConfigError(f"not a host name: {name!r}")
    try:
        ips = [str(ipaddress.ip_address(ip)) for ip in ip_addresses]
    except ValueError as error:
        raise ConfigError(str(error)) from error
    return ", ".join([*(f"DNS:{n}" for n in dns_names), *(f"IP:{ip}" for ip in ips)])


def generate_dev_pki(
    directory: Path,
    *,
    dns_names: Sequence[str] = DEFAULT_DNS_NAMES,
    ip_addresses: Sequence[str] = DEFAULT_IP_ADDRESSES,
    days: int = 825,
    common_name: str = "intercom-gateway development CA",
) -> TlsFiles:
    """Write a fresh CA and a server certificate signed by it; keys are 0600."""
    files = TlsFiles(directory)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    config = directory / "openssl.cnf"
    config.write_text(
        _OPENSSL_CONFIG.format(san=subject_alt_names(dns_names, ip_addresses)), encoding="utf-8"
    )
    csr = directory / "server.csr"
    try:
        _make_key(files.ca_key)
        _openssl(
            "req", "-new", "-x509", "-key", files.ca_key, "-out", files.ca_cert,
            "-days", str(days), "-subj", f"/CN={common_name}",
            "-config", config, "-extensions", "ca", "-sha256",
        )  # fmt: skip
        _make_key(files.server_key)
        _openssl(
            "req", "-new", "-key", files.server_key, "-out", csr,
            "-subj", f"/CN={(list(dns_names) or list(ip_addresses))[0]}", "-config", config,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", csr, "-CA", files.ca_cert, "-CAkey", files.ca_key,
            "-out", files.server_cert, "-days", str(days), "-sha256",
            # A random serial: two CAs made by this function never issue the same one.
            "-set_serial", f"0x{secrets.token_hex(16)}",
            "-extfile", config, "-extensions", "server",
        )  # fmt: skip
    finally:
        csr.unlink(missing_ok=True)
        config.unlink(missing_ok=True)
    return files


def _make_key(path: Path) -> None:
    path.unlink(missing_ok=True)
    # umask 077 while OpenSSL writes: the key is never readable by others, not even briefly.
    old = os.umask(0o077)
    try:
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)
    finally:
        os.umask(old)


def _openssl(*args: str | Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise BrokerError("openssl is not installed (Debian: apt-get install openssl)")
    argv = [binary, *(str(a) for a in args)]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BrokerError(f"openssl {args[0]} failed: {result.stderr.strip()}")
