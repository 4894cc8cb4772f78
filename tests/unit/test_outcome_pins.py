"""Pins of what a decision publishes, from mutants of outcomes.py that no test held.

``Decision.messages`` is what the gateway publishes per event (gateway/service.py plans
from it); ``Outcome.forwarded_message`` is the one envelope of one copy. docs/mutation.md
lists the mutants each test was first shown to kill: ``messages`` 3 and 6 (every message
of an outcome built from its event copy, so the image copy's message carried the event's
facts under the event's rule) and ``forwarded_message`` 4 (``or`` -> ``and`` in the guard,
so a withheld outcome handed a copy would publish it).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from intercom_gateway.core.models import EVENT_MODELS, EventType
from intercom_gateway.core.outcomes import Decision, Reason
from intercom_gateway.core.policy import PartnerRegistry, Policy
from intercom_gateway.core.tags import Part

from .conftest import NOW
from .test_decision import consent, make_event, run

# Every event type whose model carries an image (spec item 2: it travels on its own).
_WITH_IMAGE = [et for et in EventType if "image" in EVENT_MODELS[et].model_fields]


def _decision_with_image(
    event_type: EventType, policy: Policy, partners: PartnerRegistry
) -> Decision:
    return run(make_event(event_type, image=True), consent(policy), policy, partners)


@pytest.mark.parametrize("event_type", _WITH_IMAGE, ids=lambda et: et.value)
def test_every_message_carries_its_own_copy_in_destination_order(
    event_type: EventType, policy: Policy, partners: PartnerRegistry
) -> None:
    decision = _decision_with_image(event_type, policy, partners)
    copies = [
        (o, c)
        for o in decision.outcomes
        if o.forwarded
        for c in o.copies
        if c.payload is not None and c.topic is not None
    ]
    messages = decision.messages(NOW)

    assert [topic for topic, _ in messages] == [c.topic for _, c in copies]
    for (topic, message), (outcome, copy) in zip(messages, copies, strict=True):
        assert message.destination == outcome.destination, topic
        assert message.event == copy.payload, topic
        assert (message.rule_id, message.clause) == (copy.tags.rule_id, copy.tags.clause)
        assert (message.purposes, message.categories) == (
            copy.tags.purposes,
            copy.tags.categories,
        ), topic
        # The image goes in its own message, and only there (spec item 2).
        assert ("image" in message.event) is (copy.part is Part.IMAGE), topic


def test_an_image_message_is_published_wherever_an_image_copy_is_made(
    policy: Policy, partners: PartnerRegistry
) -> None:
    # Not vacuous: the packaged policy sends some image somewhere, under its own rule.
    published = []
    for event_type in _WITH_IMAGE:
        decision = _decision_with_image(event_type, policy, partners)
        images = [o.image_copy for o in decision.forwarded if o.image_copy is not None]
        image_messages = [m for _, m in decision.messages(NOW) if "image" in m.event]
        assert [m.rule_id for m in image_messages] == [c.tags.rule_id for c in images]
        assert all(m.rule_id != decision.outcome(m.destination).rule_id for m in image_messages), (
            "the image travels under its own rule, not the event copy's"
        )
        published += image_messages
    assert published


def test_a_withheld_outcome_publishes_nothing_even_when_handed_a_copy(
    policy: Policy, partners: PartnerRegistry
) -> None:
    decision = run(
        make_event(EventType.VISITOR, image=True),
        consent(policy, services_used=()),
        policy,
        partners,
    )
    forwarded = decision.outcome("cloud")
    withheld = next(o for o in decision.outcomes if not o.forwarded)
    assert withheld.reason is Reason.SERVICE_NOT_USED
    assert forwarded.event_copy is not None
    with pytest.raises(ValueError, match="nothing to publish"):
        withheld.forwarded_message(decision, NOW, forwarded.event_copy)
    with pytest.raises(ValueError, match="nothing to publish"):
        withheld.forwarded_message(decision, NOW)


def test_a_forwarded_outcome_without_copies_has_nothing_to_publish(
    policy: Policy, partners: PartnerRegistry
) -> None:
    decision = _decision_with_image(EventType.VISITOR, policy, partners)
    emptied = replace(decision.outcome("cloud"), copies=())
    with pytest.raises(ValueError, match="cloud: nothing to publish per event"):
        emptied.forwarded_message(decision, NOW)
