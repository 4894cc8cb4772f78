"""Consent notices (spec item 11, §8, §5(1)②, §7(1)①): which change gives which service
a notice, and what the notice says, per kind of change."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intercom_gateway.core import topics
from intercom_gateway.core.consent import ConsentState, apply_change
from intercom_gateway.core.models import (
    AcceptPolicy,
    ConsentNotice,
    Initialise,
    PurposeOptOut,
    Register,
    ReturnHomeNotification,
    ServiceUse,
    SettingsChangeBody,
)
from intercom_gateway.core.notices import (
    NOTICE_EVENT_TYPE,
    NoticeChange,
    change_notices,
    notice_from_record,
    notice_id,
    notice_topic,
    withdrawn,
)
from intercom_gateway.core.policy import PartnerRegistry, Policy
from intercom_gateway.core.records import LedgerRow
from intercom_gateway.simulators.settings import settings_change

from .conftest import NOW

BUILDING, DWELLING = "b1", "d101"


def _notices(
    state: ConsentState, body: SettingsChangeBody, policy: Policy, partners: PartnerRegistry
) -> tuple[ConsentState, tuple[tuple[ConsentNotice, LedgerRow], ...]]:
    change = settings_change(BUILDING, DWELLING, body, requested_at=NOW)
    result = apply_change(state, change, policy=policy, partners=partners, now=NOW)
    made = change_notices(
        state, result, change, partners=partners, policy_version=policy.version, now=NOW
    )
    return result.state, made


def _using(policy: Policy, *services: str, stopped: tuple[str, ...] = ()) -> ConsentState:
    return ConsentState(
        building_id=BUILDING,
        dwelling_id=DWELLING,
        registered=True,
        services_used=services,
        provision_stopped=stopped,
        accepted_policy_version=policy.version,
        revision=4,
        updated_at=NOW - timedelta(days=1),
    )


@pytest.mark.parametrize(
    ("body", "change", "clause", "delete"),
    [
        pytest.param(
            ServiceUse(partner_id="concierge", used=False),
            "service_stopped",
            "§5(1)②, §3(3)/(4)",
            ("images",),
            id="§5(1)②-stop-use",
        ),
        pytest.param(
            ServiceUse(partner_id="concierge", used=False, request="stop_provision"),
            "provision_stopped",
            "§8, §3(3)/(4)",
            ("images",),
            id="§8-stop-provision",
        ),
    ],
)
def test_a_stopped_service_gets_one_notice_saying_what_changed(
    policy: Policy,
    partners: PartnerRegistry,
    body: SettingsChangeBody,
    change: str,
    clause: str,
    delete: tuple[str, ...],
) -> None:
    after, made = _notices(_using(policy, "concierge", "elder-watch"), body, policy, partners)
    [(notice, row)] = made
    assert notice.partner_id == "concierge"
    assert (notice.building_id, notice.dwelling_id) == (BUILDING, DWELLING)
    assert notice.change == change and notice.clause == clause
    assert notice.effective_from == NOW
    assert notice.consent_revision == after.revision == 5
    assert notice.stop == ("receiving", "processing")
    assert notice.delete == delete
    assert notice.policy_version == policy.version
    assert notice_topic(notice) == "partners/concierge/v1/b1/d101/consent_notice"
    # The ledger row: a provision to the service like any other (§8, spec item 8).
    assert row.recipient == "partner:concierge" and row.recipient_kind == "partner"
    assert row.third_party and not row.image
    assert (row.building_id, row.dwelling_id, row.at) == (BUILDING, DWELLING, NOW)
    assert row.event_id == str(notice.notice_id) and row.event_type == NOTICE_EVENT_TYPE
    assert row.decision_id == str(notice.change_id)


def test_initialising_notifies_every_service_used_and_not_stopped(
    policy: Policy, partners: PartnerRegistry
) -> None:
    """§7(1)①: the services the dwelling used, unlock-mode ones too; not one it had
    stopped provision to (it was told then)."""
    before = _using(policy, "concierge", "parcel-unlock", stopped=("elder-watch",))
    _, made = _notices(before, Initialise(), policy, partners)
    assert [n.partner_id for n, _ in made] == ["concierge", "parcel-unlock"]
    for notice, _ in made:
        assert notice.change == NoticeChange.INITIALISED.value
        assert notice.clause == "§7(1)①, §8"
        assert notice.delete == ("all",)
    kinds = {row.recipient: row.recipient_kind for _, row in made}
    assert kinds == {"partner:concierge": "partner", "partner:parcel-unlock": "unlock_service"}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(ServiceUse(partner_id="elder-watch", used=False), id="never-used"),
        pytest.param(ServiceUse(partner_id="nobody", used=False), id="refused-unknown"),
        pytest.param(ServiceUse(partner_id="concierge", used=True), id="use"),
        pytest.param(ReturnHomeNotification(enabled=False), id="return-home-off"),
        pytest.param(PurposeOptOut(purpose="marketing", opted_out=True), id="opt-out"),
        pytest.param(AcceptPolicy(policy_version="2026-04-01"), id="accept"),
        pytest.param(Register(policy_version="2026-04-01"), id="register-refused"),
    ],
)
def test_a_change_that_withdraws_from_no_service_gives_no_notice(
    policy: Policy, partners: PartnerRegistry, body: SettingsChangeBody
) -> None:
    _, made = _notices(_using(policy, "concierge"), body, policy, partners)
    assert made == ()


def test_a_repeated_stop_gives_no_second_notice(policy: Policy, partners: PartnerRegistry) -> None:
    stop = ServiceUse(partner_id="concierge", used=False)
    after, first = _notices(_using(policy, "concierge"), stop, policy, partners)
    again, second = _notices(after, stop, policy, partners)
    assert len(first) == 1 and second == ()
    assert again.revision == after.revision + 1  # applied again, withdrawing nothing


def test_an_initialised_dwelling_initialised_again_notifies_no_one(
    policy: Policy, partners: PartnerRegistry
) -> None:
    after, _ = _notices(_using(policy, "concierge"), Initialise(), policy, partners)
    assert _notices(after, Initialise(), policy, partners)[1] == ()


def test_the_notice_is_made_again_the_same_from_its_row_and_stored_change(
    policy: Policy, partners: PartnerRegistry
) -> None:
    """What recovery does (gateway.notices): the row and the stored change suffice."""
    change = settings_change(BUILDING, DWELLING, Initialise(), requested_at=NOW)
    before = _using(policy, "concierge", "elder-watch")
    result = apply_change(before, change, policy=policy, partners=partners, now=NOW)
    made = change_notices(
        before, result, change, partners=partners, policy_version=policy.version, now=NOW
    )
    for notice, row in made:
        again = notice_from_record(row, change.model_dump_json(), revision=result.state.revision)
        assert again == notice
        assert notice.notice_id == notice_id(change.change_id, notice.partner_id)
    ids = {n.notice_id for n, _ in made}
    assert len(ids) == len(made) == 2


def test_the_notice_topic_is_in_the_service_tree_only() -> None:
    topic = topics.consent_notice("concierge", BUILDING, DWELLING)
    assert topics.matches(topics.partner_filter("concierge"), topic)
    assert not topics.matches(topics.partner_filter("elder-watch"), topic)
    assert not topics.matches(topics.PANEL_EVENTS_FILTER, topic)


_SERVICES = ("concierge", "elder-watch", "parcel-unlock")
_BODIES = st.one_of(
    st.builds(ServiceUse, partner_id=st.sampled_from(_SERVICES), used=st.booleans()),
    st.builds(
        ServiceUse,
        partner_id=st.sampled_from(_SERVICES),
        used=st.just(False),
        request=st.just("stop_provision"),
    ),
    st.just(Initialise()),
    st.just(Register(policy_version="2026-04-01")),
    st.builds(ReturnHomeNotification, enabled=st.booleans()),
)


@settings(max_examples=200, deadline=None)
@given(
    used=st.sets(st.sampled_from(_SERVICES)),
    stopped=st.sets(st.sampled_from(_SERVICES)),
    bodies=st.lists(_BODIES, max_size=8),
)
def test_notices_go_exactly_to_the_services_a_change_withdraws_from(
    policy: Policy,
    partners: PartnerRegistry,
    used: set[str],
    stopped: set[str],
    bodies: list[SettingsChangeBody],
) -> None:
    """Over any sequence of changes: a service gets a notice from a change iff it
    received the dwelling's events before it and not after (``ConsentState.uses``), and
    no two notices share an id."""
    state = _using(policy, *used, stopped=tuple(stopped))
    ids: set[uuid.UUID] = set()
    count = 0
    for body in bodies:
        after, made = _notices(state, body, policy, partners)
        expected = {s for s in _SERVICES if state.uses(s) and not after.uses(s)}
        assert {n.partner_id for n, _ in made} == expected == set(withdrawn(state, after))
        ids |= {n.notice_id for n, _ in made}
        count += len(made)
        state = after
    assert len(ids) == count
