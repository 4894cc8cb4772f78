"""Spec item 2, down to the message: every copy ``decide`` produces is tagged truly.

A copy's purposes are allowed, under its one rule, for every data category in it; an
image never shares a message with the event's facts or with a purpose other than its
image rule's. ``tags.untrue_tags`` is the check ``decide`` runs; the property below also
holds every copy to an oracle written out here, so a broken check cannot pass itself.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given

from intercom_gateway.core import topics
from intercom_gateway.core.consent import ConsentState
from intercom_gateway.core.models import Event, EventType
from intercom_gateway.core.outcomes import Outcome, Reason
from intercom_gateway.core.policy import (
    BASE_FIELDS,
    IMAGE_FIELD,
    DestinationKind,
    PartnerRegistry,
    Policy,
    Rule,
)
from intercom_gateway.core.tags import IMAGE_COPY_FIELDS, Copy, Part, Tags, untrue_tags

from .test_decision import (
    _POLICY_FOR_STRATEGIES,
    _PROPERTY,
    IMAGE,
    _flat_strings,
    consent,
    make_event,
    run,
    scenarios,
)

_RULES = {r.id: r for r in _POLICY_FOR_STRATEGIES.rules}
_IMAGE_CATEGORIES = {k for k, c in _POLICY_FOR_STRATEGIES.categories.items() if c.image}
_IMAGE_PURPOSES = {k for k, p in _POLICY_FOR_STRATEGIES.purposes.items() if p.images}


def _top_level(fields: tuple[str, ...]) -> set[str]:
    return {f.split(".", 1)[0] for f in fields}


def _assert_true_tags(outcome: Outcome, copy: Copy, event: Event) -> None:
    """The oracle: what every copy must say of itself, written out independently."""
    assert untrue_tags(copy.tags, kind=outcome.kind, policy=_POLICY_FOR_STRATEGIES) is None
    assert "+" not in copy.rule_id  # exactly one rule...
    rule = _RULES[copy.rule_id]  # ...of the policy
    assert rule.destination is outcome.kind
    assert copy.categories and set(copy.categories) <= set(rule.categories)
    assert copy.purposes and set(copy.purposes) <= set(rule.purposes)
    payload = copy.payload
    if payload is not None:  # statistics are aggregated: no payload
        assert set(payload) == _top_level(copy.fields)
    images = set(copy.categories) & _IMAGE_CATEGORIES
    carries_image = payload is not None and IMAGE_FIELD in payload
    if copy.part is Part.IMAGE:
        # The image alone, for its image rule's purposes only (§3(3)/(4)).
        assert images == set(copy.categories) and len(images) == 1
        assert set(copy.purposes) <= _IMAGE_PURPOSES
        assert set(copy.purposes) <= set(rule.purposes)
        assert rule.fields == (IMAGE_FIELD,)
        assert copy.fields == IMAGE_COPY_FIELDS
        assert payload is not None and payload[IMAGE_FIELD] == IMAGE.model_dump(mode="json")
        assert payload["event_id"] == str(event.event_id)  # re-associates it
        assert copy.topic == topics.image(outcome.topic or "")
    else:
        # The event's facts: no image, no image category, no image-only purpose.
        assert not images and not carries_image
        assert not set(copy.purposes) & _IMAGE_PURPOSES
        assert IMAGE.sha256 not in _flat_strings(payload or {})
        assert copy.topic is None or not topics.is_image(copy.topic)


@_PROPERTY
@given(scenarios(_POLICY_FOR_STRATEGIES))
def test_every_copy_decide_produces_is_tagged_truly(
    scenario: tuple[Event, ConsentState, PartnerRegistry],
) -> None:
    event, state, registry = scenario
    decision = run(event, state, _POLICY_FOR_STRATEGIES, registry)
    for outcome in decision.outcomes:
        if not outcome.forwarded:
            assert outcome.copies == ()
            continue
        parts = [c.part for c in outcome.copies]
        assert parts in ([Part.EVENT], [Part.EVENT, Part.IMAGE])
        assert outcome.untrue is None  # the packaged policy never needs to refuse one
        for copy in outcome.copies:
            _assert_true_tags(outcome, copy, event)
        image = outcome.image_copy
        if image is not None:
            # Only the image rule's purposes, as far as the dwelling and service allow.
            mapping = _POLICY_FOR_STRATEGIES.event_types[EventType(event.type)]
            assert mapping.image_category is not None
            image_rule = _POLICY_FOR_STRATEGIES.rule_for(outcome.kind, mapping.image_category)
            assert image_rule is not None and image.rule_id == image_rule.id
            assert not set(image.purposes) & set(state.opted_out)


@pytest.mark.parametrize(
    ("event_type", "images"),
    [
        pytest.param(EventType.VISITOR, {"cloud", "partner:concierge"}, id="§3(3)-visitor"),
        pytest.param(EventType.RETURN_HOME, {"cloud"}, id="§3(3)-return-home"),
        pytest.param(EventType.UNLOCK_MODE, {"partner:parcel-unlock"}, id="§3(4)-unlock"),
        pytest.param(EventType.ALARM, set(), id="no-image"),
    ],
)
def test_the_sample_world_sends_each_image_on_its_own(
    event_type: EventType, images: set[str], policy: Policy, partners: PartnerRegistry
) -> None:
    event = make_event(event_type, image=True)
    decision = run(event, consent(policy), policy, partners)
    assert {o.destination for o in decision.forwarded if o.image_copy} == images
    for outcome in decision.forwarded:
        for copy in outcome.copies:
            _assert_true_tags(outcome, copy, event)


def test_an_image_topic_is_one_level_below_its_event_topic() -> None:
    assert topics.image(topics.cloud("b1", "d1", "visitor")) == "cloud/v1/b1/d1/visitor/image"
    partner = topics.partner("concierge", "b1", "d1", "visitor")
    assert topics.image(partner) == "partners/concierge/v1/b1/d1/visitor/image"
    assert topics.is_image("partners/concierge/v1/b1/d1/visitor/image")
    assert not topics.is_image(partner)
    # A subscriber to the event topics does not get images; the ACL's trees cover both.
    assert not topics.matches(
        topics.cloud("+", "+", "+"), topics.image(topics.cloud("b", "d", "v"))
    )
    assert topics.matches(topics.image(topics.cloud("+", "+", "+")), "cloud/v1/b/d/v/image")
    assert topics.matches("cloud/#", "cloud/v1/b/d/v/image")
    assert topics.matches(topics.partner_filter("concierge"), topics.image(partner))


def test_the_image_copy_is_published_on_its_event_topic_s_image_level(
    policy: Policy, partners: PartnerRegistry
) -> None:
    decision = run(make_event(EventType.VISITOR, image=True), consent(policy), policy, partners)
    published = {topic for topic, _ in decision.messages(decision.decided_at)}
    assert "partners/concierge/v1/bldg-1/dw-101/visitor" in published
    assert "partners/concierge/v1/bldg-1/dw-101/visitor/image" in published
    assert "cloud/v1/bldg-1/dw-101/visitor/image" in published
    assert not any(
        t.startswith(("group/", "analytics/")) and t.endswith("/image") for t in published
    )


# --- the check itself -------------------------------------------------------------------


def _tags(**overrides: Any) -> Tags:
    fields: dict[str, Any] = {
        "part": Part.IMAGE,
        "rule_id": "cloud-images",
        "clause": "§3(3)",
        "purposes": ("resident_confirmation",),
        "categories": ("visitor_image",),
        "fields": IMAGE_COPY_FIELDS,
        **overrides,
    }
    return Tags(**fields)


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        pytest.param({}, None, id="true"),
        pytest.param(
            {"rule_id": "cloud-events+cloud-images"}, "not one rule", id="joined-rule-ids"
        ),
        pytest.param({"rule_id": "partner-images"}, "is for partner", id="other-kind"),
        pytest.param(
            {"purposes": ("marketing", "resident_confirmation")},
            "does not allow marketing",
            id="image-for-marketing",
        ),
        pytest.param(
            {"categories": ("mobile_security_event", "visitor_image")},
            "does not cover mobile_security_event",
            id="image-with-facts",
        ),
        pytest.param(
            {"fields": (*IMAGE_COPY_FIELDS, "origin")}, "carries only", id="image-with-a-fact"
        ),
        pytest.param({"part": Part.EVENT}, "carries only", id="image-as-event-part"),
        pytest.param({"purposes": ()}, "must name", id="no-purpose"),
        pytest.param(
            {
                "part": Part.EVENT,
                "rule_id": "cloud-events",
                "categories": ("mobile_security_event",),
                "purposes": ("backup",),
                "fields": (*BASE_FIELDS, "image"),
            },
            "covers no image category",
            id="facts-with-the-image",
        ),
    ],
)
def test_untrue_tags_names_what_would_not_hold(
    overrides: dict[str, Any], why: str | None, policy: Policy
) -> None:
    found = untrue_tags(_tags(**overrides), kind=DestinationKind.CLOUD, policy=policy)
    if why is None:
        assert found is None
    else:
        assert found is not None and why in found


def _rogue(policy: Policy, rule_id: str, **update: Any) -> Policy:
    """The policy with one rule changed, past the loader's checks (model_copy does not
    validate): what a hand-edited or future policy file might say."""
    rules = tuple(r.model_copy(update=update) if r.id == rule_id else r for r in policy.rules)
    return policy.model_copy(update={"rules": rules})


def test_an_image_rule_that_allows_marketing_sends_no_image(
    policy: Policy, partners: PartnerRegistry
) -> None:
    """Fail closed: the loader refuses this rule; decide refuses the copy on its own."""
    rogue = _rogue(policy, "cloud-images", purposes=("resident_confirmation", "marketing"))
    outcome = run(make_event(EventType.VISITOR, image=True), consent(rogue), rogue, partners)
    cloud = outcome.outcome("cloud")
    assert cloud.forwarded and cloud.image_copy is None
    assert [c.part for c in cloud.copies] == [Part.EVENT]
    assert cloud.untrue is not None and "marketing" in cloud.untrue
    assert "not sent" in outcome.explain()
    # Elsewhere the image still goes, under its own tags.
    assert outcome.outcome("partner:concierge").image_copy is not None


def test_an_event_rule_with_an_image_purpose_forwards_nothing_there(
    policy: Policy, partners: PartnerRegistry
) -> None:
    rogue = _rogue(policy, "group-joint-use", purposes=("support", "resident_confirmation"))
    group = run(make_event(EventType.ALARM), consent(rogue), rogue, partners).outcome("group")
    assert not group.forwarded and group.copies == ()
    assert group.reason is Reason.UNTRUE_TAGS
    assert "resident_confirmation" in group.detail


def test_no_rule_of_the_packaged_policy_joins_rule_ids(policy: Policy) -> None:
    assert all(isinstance(r, Rule) and "+" not in r.id for r in policy.rules)
