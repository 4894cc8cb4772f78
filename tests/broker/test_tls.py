"""The TLS listener of the project's mosquitto.conf, with the development CA."""

from __future__ import annotations

import gc
import ssl
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from intercom_gateway.broker.mosquitto import GATEWAY, Credentials, Mosquitto
from intercom_gateway.broker.tls import TlsFiles, generate_dev_pki
from intercom_gateway.bus import BrokerAddress, MqttBus, TlsOptions
from intercom_gateway.cli.security import tls
from intercom_gateway.core import topics
from intercom_gateway.errors import ConnectFailed
from tests.broker.conftest import client
from tests.helpers import collect

PARTNER = "concierge"


def _with_ca(address: BrokerAddress, ca_file: Path) -> BrokerAddress:
    return BrokerAddress(
        address.host, address.port, address.username, address.password, TlsOptions(str(ca_file))
    )


async def test_tls_with_the_dev_ca_carries_messages(broker: Mosquitto) -> None:
    address = broker.tls_address(PARTNER)
    async with (
        MqttBus(address, client_id=address.client_id(f"tls-{uuid.uuid4()}")) as partner,
        client(broker, GATEWAY) as gateway,
    ):
        await partner.subscribe(topics.partner_filter(PARTNER))
        topic = topics.partner(PARTNER, "b001", "d0001", "visitor")
        await gateway.publish(topic, b"over tls")
        [message] = await collect(partner, 1)
        assert (message.topic, message.payload) == (topic, b"over tls")


async def test_tls_listener_still_wants_a_password(broker: Mosquitto) -> None:
    tls_address = broker.tls_address(PARTNER)
    address = BrokerAddress(
        tls_address.host, tls_address.port, PARTNER, "wrong", tls=tls_address.tls
    )
    with pytest.raises(ConnectFailed) as refused:
        async with MqttBus(address, client_id=address.client_id(f"tls-{uuid.uuid4()}")):
            pass
    assert refused.value.reason_code == 0x87


# paho 2.2 does not close its socket when the TLS handshake fails; without this filter
# `filterwarnings = error` pins the ResourceWarning on whichever test runs next.
@pytest.mark.filterwarnings("ignore:unclosed <ssl.SSLSocket:ResourceWarning")
async def test_a_client_not_trusting_the_ca_is_refused(broker: Mosquitto, tmp_path: Path) -> None:
    stranger = generate_dev_pki(tmp_path / "other-ca")
    address = _with_ca(broker.tls_address(PARTNER), stranger.ca_cert)
    with pytest.raises(ConnectFailed) as refused:
        async with MqttBus(address, client_id=address.client_id(f"tls-{uuid.uuid4()}")):
            pass
    cause = refused.value.__cause__
    del refused  # its traceback holds the socket: collect it now, under this test's filter
    gc.collect()
    assert isinstance(cause, ssl.SSLCertVerificationError)


async def test_plain_mqtt_on_the_tls_port_is_refused(broker: Mosquitto) -> None:
    tls_address = broker.tls_address(PARTNER)
    plain = BrokerAddress(tls_address.host, tls_address.port, PARTNER, tls_address.password)
    with pytest.raises(ConnectFailed):
        async with MqttBus(
            plain, client_id=plain.client_id(f"plain-{uuid.uuid4()}"), connect_timeout=5
        ):
            pass


async def test_certificates_from_tls_init_serve_the_broker(
    tmp_path: Path, broker: Mosquitto
) -> None:
    directory = tmp_path / "tls"
    result = CliRunner().invoke(tls, ["init", "--dir", str(directory)])
    assert result.exit_code == 0, result.output
    credentials = Credentials(broker.credentials.directory, broker.credentials.passwords)
    own = Mosquitto(workdir=tmp_path / "run", credentials=credentials, tls=TlsFiles(directory))
    async with own:
        address = own.tls_address(PARTNER)
        async with MqttBus(address, client_id=address.client_id(f"tls-{uuid.uuid4()}")) as bus:
            await bus.subscribe(topics.partner_filter(PARTNER))
    assert own.tls.directory == directory
    assert not (tmp_path / "run" / "tls").exists()


async def test_a_burst_of_large_messages_over_tls_all_arrive(broker: Mosquitto) -> None:
    """Messages larger than a TLS record, back to back, through the bus's read buffer:
    every one arrives, in order."""
    count, size = 300, 30_000
    topic = topics.partner(PARTNER, "b001", "d0001", "visitor")
    address = broker.tls_address(PARTNER)
    async with (
        MqttBus(address, client_id=address.client_id(f"tls-burst-{uuid.uuid4()}")) as reader,
        client(broker, GATEWAY) as writer,
    ):
        await reader.subscribe(topics.partner_filter(PARTNER))
        for index in range(count):
            await writer.publish(topic, index.to_bytes(4, "big") + b"x" * size)
        await writer.drain()
        arrived = await collect(reader, count, timeout=20)
    assert [int.from_bytes(m.payload[:4], "big") for m in arrived] == list(range(count))
