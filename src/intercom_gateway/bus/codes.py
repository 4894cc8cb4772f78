"""The tables of the MQTT v5 specification the codec (``mqtt5``) reads by: property
identifiers and how each property's value is laid out, and the reason codes by name.

Apart from the codec so that its module holds the packets, not the lists they refer to.
"""

from __future__ import annotations

# Property identifiers the codec and the bus use by name (MQTT 5.0, 2.2.2.2).
SESSION_EXPIRY = 0x11
RECEIVE_MAXIMUM = 0x21
MAXIMUM_QOS = 0x24
MAXIMUM_PACKET_SIZE = 0x27
REASON_STRING = 0x1F
USER_PROPERTY = 0x26

# How each property's value is laid out, to walk a property list.
BYTE, U16, U32, VARINT, UTF8, BINARY, PAIR = range(7)
PROPERTY_KINDS: dict[int, int] = {
    0x01: BYTE,  # payload format indicator
    0x02: U32,  # message expiry interval
    0x03: UTF8,  # content type
    0x08: UTF8,  # response topic
    0x09: BINARY,  # correlation data
    0x0B: VARINT,  # subscription identifier
    0x11: U32,  # session expiry interval
    0x12: UTF8,  # assigned client identifier
    0x13: U16,  # server keep alive
    0x15: UTF8,  # authentication method
    0x16: BINARY,  # authentication data
    0x17: BYTE,  # request problem information
    0x18: U32,  # will delay interval
    0x19: BYTE,  # request response information
    0x1A: UTF8,  # response information
    0x1C: UTF8,  # server reference
    0x1F: UTF8,  # reason string
    0x21: U16,  # receive maximum
    0x22: U16,  # topic alias maximum
    0x23: U16,  # topic alias
    0x24: BYTE,  # maximum QoS
    0x25: BYTE,  # retain available
    0x26: PAIR,  # user property
    0x27: U32,  # maximum packet size
    0x28: BYTE,  # wildcard subscription available
    0x29: BYTE,  # subscription identifier available
    0x2A: BYTE,  # shared subscription available
}

# Reason codes as the specification names them (MQTT 5.0, 2.4).
REASONS: dict[int, str] = {
    0x00: "Success",
    0x01: "Granted QoS 1",
    0x02: "Granted QoS 2",
    0x04: "Disconnect with will message",
    0x10: "No matching subscribers",
    0x11: "No subscription existed",
    0x18: "Continue authentication",
    0x19: "Re-authenticate",
    0x80: "Unspecified error",
    0x81: "Malformed packet",
    0x82: "Protocol error",
    0x83: "Implementation specific error",
    0x84: "Unsupported protocol version",
    0x85: "Client identifier not valid",
    0x86: "Bad user name or password",
    0x87: "Not authorized",
    0x88: "Server unavailable",
    0x89: "Server busy",
    0x8A: "Banned",
    0x8B: "Server shutting down",
    0x8C: "Bad authentication method",
    0x8D: "Keep alive timeout",
    0x8E: "Session taken over",
    0x8F: "Topic filter invalid",
    0x90: "Topic name invalid",
    0x91: "Packet identifier in use",
    0x92: "Packet identifier not found",
    0x93: "Receive maximum exceeded",
    0x94: "Topic alias invalid",
    0x95: "Packet too large",
    0x96: "Message rate too high",
    0x97: "Quota exceeded",
    0x98: "Administrative action",
    0x99: "Payload format invalid",
    0x9A: "Retain not supported",
    0x9B: "QoS not supported",
    0x9C: "Use another server",
    0x9D: "Server moved",
    0x9E: "Shared subscriptions not supported",
    0x9F: "Connection rate exceeded",
    0xA0: "Maximum connect time",
    0xA1: "Subscription identifiers not supported",
    0xA2: "Wildcard subscriptions not supported",
}


def reason_name(code: int) -> str:
    return f"{REASONS.get(code, 'Unknown reason')} (0x{code:02x})"
