"""The bus on paho-mqtt: the reference our transport, ``bus.MqttBus``, is checked against.

Until our own transport this was the gateway's bus; now paho-mqtt is a test
dependency only (the ``test`` extra). It is kept for two reasons: the bus tests on a
real Mosquitto (tests/broker/test_bus.py) run on both, so a difference between our
MQTT code and paho's shows as a failing test, and the relay benchmark runs its
pass-through relay on either (``passthrough-paho``) to measure what ours gains.

paho is driven from the asyncio event loop itself (the socket is watched with
``add_reader``/``add_writer``, as aiomqtt does), so no thread and no lock is involved.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from typing import Any, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from intercom_gateway.bus import BrokerAddress, Message, Will, mqtt5
from intercom_gateway.bus.base import UserProperties
from intercom_gateway.bus.client import BrokerClient, disconnected
from intercom_gateway.errors import BusError, ConnectFailed, ConnectionLost, PublishFailed


class _UserProperties:
    """The properties of an outgoing PUBLISH, encoded once, as paho's ``pack()`` would.

    paho's ``Properties`` rebuilds its table of property names for every instance and
    scans it for every attribute set and packed: with the six to eight user properties
    the gateway puts on each forwarded message this was a tenth of its CPU. Only user
    properties (identifier 0x26, a UTF-8 string pair) are needed on a publish.
    """

    __slots__ = ("_packed", "pairs")

    def __init__(self, pairs: UserProperties) -> None:
        self.pairs = tuple(pairs)
        self._packed = mqtt5.user_properties(self.pairs)

    def pack(self) -> bytes:
        return self._packed

    def __repr__(self) -> str:  # paho's debug log prints the properties
        return f"[UserProperty : {list(self.pairs)}]"


class _ReadBuffer:
    """The socket as paho reads it: one recv() system call serves many of paho's reads.

    paho reads a packet in three or more recv() calls (the type byte, the length byte
    by byte, then the rest), each a system call; at a few thousand packets a second
    that showed in the profile. Everything but recv() goes to the socket itself.
    """

    def __init__(self, sock: socket.socket, size: int = 65_536) -> None:
        self._sock = sock
        self._size = size
        self._data = b""
        self._offset = 0

    @property
    def buffered(self) -> bool:
        return self._offset < len(self._data)

    def recv(self, count: int) -> bytes:
        if self._offset >= len(self._data):
            # Raises BlockingIOError (or an SSL want-read) when nothing is there, as paho
            # expects; b"" is the peer closing.
            self._data = self._sock.recv(self._size)
            self._offset = 0
        chunk = self._data[self._offset : self._offset + count]
        self._offset += len(chunk)
        return chunk

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class PahoBus(BrokerClient[ReasonCode]):
    """An MQTT v5 client on the running event loop, as ``MqttBus``. Use as ``async with``."""

    def __init__(
        self,
        address: BrokerAddress,
        *,
        client_id: str,
        clean_start: bool = True,
        session_expiry: int = 0,
        manual_ack: bool = False,
        receive_maximum: int = 1000,
        publish_window: int = 1000,
        keepalive: int = 30,
        will: Will | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        super().__init__(publish_window=publish_window)
        self.address = address
        self.client_id = client_id
        self._clean_start = clean_start
        self._session_expiry = session_expiry
        self._manual_ack = manual_ack
        self._receive_maximum = receive_maximum
        self._keepalive = keepalive
        self._will = will
        self._connect_timeout = connect_timeout
        self._misc_task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None
        self._reader: _ReadBuffer | None = None
        self._client = self._make_client(self._will)

    def _make_client(self, will: Will | None) -> paho.Client:
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=self._manual_ack,
        )
        # paho's own queue must never be what limits us: the window does. 0 is "no
        # limit" to paho, and it matters: with a limit, paho rescans every unacknowledged
        # message on each PUBACK (_update_inflight), O(window) per ack, which profiled
        # as most of the gateway's CPU at a full window.
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        if self.address.username is not None:
            client.username_pw_set(self.address.username, self.address.password)
        if self.address.tls is not None:
            tls = self.address.tls
            client.tls_set(
                ca_certs=tls.ca_file,
                certfile=tls.cert_file,
                keyfile=tls.key_file,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        if will is not None:
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        return client

    # --- lifecycle -----------------------------------------------------------------

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._session_expiry
        props.ReceiveMaximum = self._receive_maximum
        try:
            # The blocking TCP connect runs in a thread; everything after it on the loop.
            await loop.run_in_executor(
                None,
                lambda: self._client.connect(
                    self.address.host,
                    self.address.port,
                    keepalive=self._keepalive,
                    clean_start=self._clean_start,
                    properties=props,
                ),
            )
        except (OSError, ssl.SSLError) as error:
            raise ConnectFailed(
                f"cannot reach broker {self.address.host}:{self.address.port}: {error}"
            ) from error
        self._attach(loop)
        try:
            reason = await asyncio.wait_for(self._connack, self._connect_timeout)
        except TimeoutError as error:
            self._detach()
            raise ConnectFailed("no CONNACK from broker in time") from error
        except ConnectFailed:
            self._detach()
            raise
        del reason

    def _attach(self, loop: asyncio.AbstractEventLoop) -> None:
        sock = self._client.socket()
        if not isinstance(sock, socket.socket):
            raise ConnectFailed("paho returned no socket")
        self._sock = sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = _ReadBuffer(sock)
        self._client._sock = self._reader  # paho calls recv() on it; the rest passes through
        loop.add_reader(sock, self._read)

        def register_write(*_: object) -> None:
            loop.add_writer(sock, self._write)

        def unregister_write(*_: object) -> None:
            loop.remove_writer(sock)

        self._client.on_socket_register_write = register_write
        self._client.on_socket_unregister_write = unregister_write
        if self._client.want_write():
            loop.add_writer(sock, self._write)
        self._misc_task = loop.create_task(self._misc(), name=f"mqtt-misc-{self.client_id}")

    def _detach(self) -> None:
        loop = asyncio.get_running_loop()
        if self._sock is not None:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(self._sock)
                loop.remove_writer(self._sock)
            # paho closes the socket only on paths it drives itself; we own its end here.
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
        if self._misc_task is not None:
            self._misc_task.cancel()
            self._misc_task = None

    def _read(self) -> None:
        # paho handles a bounded number of packets a call; what is left in our buffer
        # would never wake the selector again, so read on until it is used up.
        while True:
            rc = self._client.loop_read(max_packets=100)
            if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN):
                self._connection_lost(ConnectionLost(f"read failed: {paho.error_string(rc)}"))
                return
            if self._lost is not None or self._reader is None or not self._reader.buffered:
                return

    def _write(self) -> None:
        rc = self._client.loop_write()
        if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN):
            self._connection_lost(ConnectionLost(f"write failed: {paho.error_string(rc)}"))

    async def _misc(self) -> None:
        while True:
            await asyncio.sleep(1)  # paho's keepalive clock, not synchronisation
            if self._client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._connection_lost(ConnectionLost("keepalive failed"))
                return

    async def close(self, *, with_will: bool = False) -> None:
        if self._closing:
            return
        self._closing = True
        if self._lost is None and self._sock is not None:
            reason = "Disconnect with will message" if with_will else "Normal disconnection"
            self._client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, reason))
            # Flush the DISCONNECT before the socket goes away.
            with contextlib.suppress(Exception):
                self._client.loop_write()
        self._detach()
        self._fail_pending(ConnectionLost("bus closed"))

    # --- paho callbacks (all run on the event loop, inside loop_read/loop_write) ------

    def _on_connect(
        self, _c: Any, _u: Any, flags: paho.ConnectFlags, reason: ReasonCode, _p: Properties | None
    ) -> None:
        future = self._connack
        if future is None or future.done():
            return
        self.session_present = bool(flags.session_present)
        if reason.is_failure:
            future.set_exception(
                ConnectFailed(f"broker refused connection: {reason}", reason_code=reason.value)
            )
        else:
            future.set_result(reason)

    def _on_disconnect(
        self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None
    ) -> None:
        if not self._closing:
            self._connection_lost(disconnected(reason.value, str(reason)))

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        user = tuple(getattr(props, "UserProperty", ()) or ())
        self._inbox.put_nowait(
            Message(
                topic=msg.topic,
                payload=bytes(msg.payload),
                qos=msg.qos,
                retain=bool(msg.retain),
                dup=bool(msg.dup),
                mid=msg.mid,
                user_properties=user,
            )
        )

    def _on_publish(
        self, _c: Any, _u: Any, mid: int, reason: ReasonCode, _p: Properties | None
    ) -> None:
        self._inflight.acknowledged(mid, reason.value, str(reason))

    def _on_subscribe(
        self, _c: Any, _u: Any, mid: int, reasons: list[ReasonCode], _p: Properties | None
    ) -> None:
        self._subacked(mid, [reason.value for reason in reasons])

    # --- the Bus interface -----------------------------------------------------------

    async def subscribe(self, *filters: str, qos: int = 1, retain_handling: int = 0) -> None:
        """Subscribe and check every SUBACK code: Mosquitto's ACL refusals are silent."""
        self._check()
        options = SubscribeOptions(qos=qos, retainHandling=retain_handling)
        rc, mid = self._client.subscribe([(f, options) for f in filters])
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise BusError(f"subscribe failed: {paho.error_string(rc)}")
        await self._granted(mid, filters)

    def ack(self, message: Message) -> None:
        """Acknowledge an inbound QoS 1 message (only meaningful with manual_ack)."""
        if self._manual_ack and message.qos > 0 and self._lost is None:
            self._client.ack(message.mid, message.qos)

    def _transmit(
        self, topic: str, payload: bytes, qos: int, retain: bool, user_properties: UserProperties
    ) -> int:
        # paho only ever calls .pack() on the properties of an outgoing PUBLISH.
        properties = cast(Properties, _UserProperties(user_properties)) if user_properties else None
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise PublishFailed(paho.error_string(info.rc), topic=topic, reason_code=int(info.rc))
        return info.mid
