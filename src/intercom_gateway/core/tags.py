"""What a forwarded message says about itself, and the check that it is true.

Spec item 2: a message's purpose tags state what it may be used for, and they hold for
every data item in it. An event's facts (§3(2)) and its image (§3(3)/(4)) are allowed
under different purposes, so they never share one message: a destination entitled to
both gets two copies, each produced under exactly one rule, with that rule's categories
and (a subset of) its purposes only. The image copy carries the image and the base
fields that tie it to its event (``IMAGE_COPY_FIELDS``), nothing of the event's facts.

``untrue_tags`` is the one check of that invariant. The router (``router._tags``) runs
it on every copy before ``decide`` produces it, and a copy that fails is not produced
(fail closed); the tests run it on every copy ``decide`` produces.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from intercom_gateway.core.policy import (
    BASE_FIELDS,
    DISTRIBUTION_KINDS,
    IMAGE_FIELD,
    DestinationKind,
    Policy,
)

__all__ = ["IMAGE_COPY_FIELDS", "Copy", "Part", "Tags", "untrue_tags"]


class Part(enum.StrEnum):
    """Which part of an event a copy carries."""

    EVENT = "event"  # the event's facts, under the rule for its category (§3(2))
    IMAGE = "image"  # its image alone, under the rule for the image's category (§3(3)/(4))


# Besides the image, an image copy carries what re-associates it with its event for the
# resident's own use (whose dwelling, which event, when), and nothing else.
IMAGE_COPY_FIELDS: tuple[str, ...] = tuple(sorted((*BASE_FIELDS, IMAGE_FIELD)))


@dataclass(frozen=True, slots=True)
class Tags:
    """What one copy states about itself: its rule, purposes, categories and fields.

    The same for every event of a route under the same opt-outs, so made once per route.
    """

    part: Part
    rule_id: str  # exactly one rule of the policy
    clause: str
    purposes: tuple[str, ...]
    categories: tuple[str, ...]
    fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Copy:
    """One message a forwarded outcome publishes: its tags, topic and payload."""

    tags: Tags
    topic: str | None  # None only for statistics, which are aggregated, not published
    payload: dict[str, Any] | None  # None for statistics

    @property
    def part(self) -> Part:
        return self.tags.part

    @property
    def rule_id(self) -> str:
        return self.tags.rule_id

    @property
    def clause(self) -> str:
        return self.tags.clause

    @property
    def purposes(self) -> tuple[str, ...]:
        return self.tags.purposes

    @property
    def categories(self) -> tuple[str, ...]:
        return self.tags.categories

    @property
    def fields(self) -> tuple[str, ...]:
        return self.tags.fields


def untrue_tags(tags: Tags, *, kind: DestinationKind, policy: Policy) -> str | None:
    """Why ``tags`` would not hold for everything in a copy to ``kind``; None if they do.

    True means: one rule of ``policy`` for that destination kind covers every category
    in the copy and allows every purpose it names; an image category travels alone, for
    image purposes only (§3(3)/(4)), with the image and its event's base fields; a copy
    without an image category holds no image and names no image-only purpose.
    """
    rule = next((r for r in policy.rules if r.id == tags.rule_id), None)
    if rule is None:
        return f"{tags.rule_id!r} is not one rule of policy {policy.version}"
    if rule.destination is not kind:
        return f"rule {rule.id} is for {rule.destination.value}, not {kind.value}"
    if not tags.categories or not tags.purposes:
        return f"a copy under rule {rule.id} must name its categories and purposes"
    uncovered = [c for c in tags.categories if c not in rule.categories]
    if uncovered:
        return f"rule {rule.id} does not cover {', '.join(uncovered)}"
    beyond = [p for p in tags.purposes if p not in rule.purposes]
    if beyond:
        return f"rule {rule.id} does not allow {', '.join(beyond)}"
    apart = _untrue_distribution(tags, kind, policy)
    if apart is not None:
        return apart
    images = [c for c in tags.categories if (found := policy.categories.get(c)) and found.image]
    if images:
        return _untrue_image(tags, images, policy)
    if tags.part is Part.IMAGE or IMAGE_FIELD in tags.fields:
        return f"an image under rule {rule.id}, which covers no image category"
    image_only = [p for p in tags.purposes if _image_purpose(policy, p)]
    if image_only:
        return f"{', '.join(image_only)} may serve images only (§3(3)/(4)), not event facts"
    return None


def _untrue_image(tags: Tags, images: list[str], policy: Policy) -> str | None:
    if len(tags.categories) > len(images):
        others = ", ".join(c for c in tags.categories if c not in images)
        return f"{', '.join(images)} shares a message with {others} (§3(3)/(4))"
    other = [p for p in tags.purposes if not _image_purpose(policy, p)]
    if other:
        return f"{', '.join(images)} may not be used for {', '.join(other)} (§3(3)/(4))"
    extra = [f for f in tags.fields if f not in IMAGE_COPY_FIELDS]
    if tags.part is not Part.IMAGE or IMAGE_FIELD not in tags.fields or extra:
        return f"an image copy carries only {', '.join(IMAGE_COPY_FIELDS)}"
    return None


def _image_purpose(policy: Policy, purpose: str) -> bool:
    found = policy.purposes.get(purpose)
    return found is not None and found.images


def _untrue_distribution(tags: Tags, kind: DestinationKind, policy: Policy) -> str | None:
    """§2(1), §3(1), §4, §5(1)①: distribution information is tagged with §3(1) purposes
    only and goes to ``DISTRIBUTION_KINDS`` only; nothing else goes to a contractor."""
    distribution = [
        c for c in tags.categories if (cat := policy.categories.get(c)) and cat.distribution
    ]
    purposes = [p for p in tags.purposes if (got := policy.purposes.get(p)) and got.distribution]
    if distribution and len(distribution) < len(tags.categories):
        return f"{', '.join(distribution)} shares a message with other categories (§2(1))"
    if distribution and len(purposes) < len(tags.purposes):
        others = ", ".join(p for p in tags.purposes if p not in purposes)
        return f"{', '.join(distribution)} may not be used for {others} (§3(1))"
    if distribution and kind not in DISTRIBUTION_KINDS:
        return f"{', '.join(distribution)} may not go to {kind.value} (§4, §5(1)①)"
    if not distribution and purposes:
        return f"{', '.join(purposes)} serve distribution information only (§3(1))"
    if not distribution and kind is DestinationKind.CONTRACTOR:
        return "a contractor gets distribution information only (§5(1)①)"
    return None
