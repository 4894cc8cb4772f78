"""What a rejection may echo and keep (rejections.py): bounded, consent first, no image or
free text in the echo."""

from __future__ import annotations

import json

from intercom_gateway.core import topics
from intercom_gateway.core.ingress import DeviceIndex, InputRejected
from intercom_gateway.core.models import RejectReason
from intercom_gateway.core.registry import generate_registry
from intercom_gateway.core.rejections import WITHHELD_DETAIL, Consent, RejectedInput, known_fields
from tests.factories import event_dict, panel_message

DEVICES = DeviceIndex.from_registry(generate_registry(buildings=1, dwellings=3))
SCHEMA = InputRejected(RejectReason.SCHEMA_VIOLATION, "1 error(s); first at top: x")


def everyone(building: str, dwelling: str) -> bool:
    return True


def reject(
    topic: str,
    payload: bytes,
    *,
    registered: Consent = everyone,
    rejection: InputRejected = SCHEMA,
) -> RejectedInput:
    return RejectedInput.of(topic, payload, rejection, devices=DEVICES, registered=registered)


def test_the_echo_keeps_schema_fields_and_drops_image_free_text_and_strangers() -> None:
    data = event_dict("return_home", dwelling="d0001", note="Hana's spare key is under the mat")
    record = reject(*panel_message(data))
    echo = json.loads(record.echo or "")
    assert echo["event_id"] == data["event_id"] and echo["device"] == data["device"]
    assert {"image", "key_nickname", "note"}.isdisjoint(echo)
    assert record.redacted and record.device == "panel-b001-d0001"
    assert "under the mat" in record.kept  # the operator's store keeps it as it came


def test_strings_are_cut_and_huge_numbers_dropped() -> None:
    data = event_dict("alarm", dwelling="d0001", zone="z" * 500, seq=int("9" * 4000))
    echo = json.loads(reject(*panel_message(data)).echo or "")
    assert echo["zone"] == "z" * 64
    assert echo["seq"] is None


def test_nothing_of_an_unregistered_dwelling_beyond_reason_topic_and_device() -> None:
    data = event_dict("return_home", dwelling="d0002")
    record = reject(*panel_message(data), registered=lambda b, d: d != "d0002")
    assert (record.echo, record.kept, record.detail) == (None, "", WITHHELD_DETAIL)
    assert record.device == "panel-b001-d0002" and record.reason is RejectReason.SCHEMA_VIOLATION


def test_a_lobby_panel_naming_an_unregistered_dwelling_keeps_nothing_of_it() -> None:
    data = event_dict("unlock_mode", dwelling="d0003")
    record = reject(*panel_message(data), registered=lambda b, d: d != "d0003")
    assert record.echo is None and record.kept == ""


def test_a_payload_that_is_not_a_json_object_is_not_echoed() -> None:
    topic = topics.panel_events("b001", "panel-b001-d0001", "alarm")
    for payload in (b"{not json", b"[1, 2, 3]", b"\xff\xfe", b'"Hana"', b"1e999"):
        record = reject(topic, payload)
        assert record.echo is None and record.redacted


def test_every_part_is_bounded_whatever_comes_in() -> None:
    topic = topics.panel_events("b001", "panel-b001-d0001", "x" * 32_500)
    detail = "y" * 10_000
    record = reject(topic, b"{" * 60_000, rejection=InputRejected(RejectReason.TOO_DEEP, detail))
    assert len(record.topic) == topics.MAX_TOPIC_LENGTH
    assert len(record.detail) == 512 and record.echo is None
    assert len(record.kept) == 4_096 and record.truncated


def test_the_known_fields_come_from_the_schemas() -> None:
    assert {"event_id", "occurred_at", "call_id", "change_id", "partner_id"} <= known_fields()
    assert known_fields().isdisjoint({"image", "key_nickname", "message"})


def test_the_echo_drops_part_a_free_text_device_errors_and_scene_names() -> None:
    control = event_dict("device_control", dwelling="d0001", result="maybe")
    scene = event_dict("scene", dwelling="d0001", devices_affected=99)
    for data, text in ((control, "error"), (scene, "name")):
        echo = json.loads(reject(*panel_message(data)).echo or "")
        assert text not in echo and echo["event_id"] == data["event_id"]
    assert known_fields().isdisjoint({"error", "name"})
    assert {"instruction_id", "scene_id", "command", "handset"} <= known_fields()
