"""Image references as panels send them: never the bytes, only id, type, size and digest.

The bytes behind a reference are a deterministic stand-in (``fake_image_bytes``), so an
image store stub can serve exactly the content whose sha256 the event carries.
"""

from __future__ import annotations

import hashlib
import random
from typing import Literal

from intercom_gateway.core.models import ImageRef

ContentType = Literal["image/jpeg", "image/png"]

_MAGIC: dict[ContentType, bytes] = {
    "image/jpeg": b"\xff\xd8\xff\xe0",
    "image/png": b"\x89PNG\r\n\x1a\n",
}
MIN_SIZE = 20_000
MAX_SIZE = 180_000  # a 640x480 intercom still is tens to a couple of hundred KiB


def fake_image_bytes(image_id: str, size: int, content_type: ContentType) -> bytes:
    """The stand-in content of an image: its format's magic number, then its id repeated."""
    magic = _MAGIC[content_type]
    filler = image_id.encode() + b"\n"
    body = filler * (size // len(filler) + 1)
    return (magic + body)[:size]


def image_ref(rng: random.Random, *, prefix: str) -> ImageRef:
    """A fresh reference; ``prefix`` says what the image shows (visitor, return, unlock)."""
    image_id = f"{prefix}-{rng.getrandbits(64):016x}"
    content_type: ContentType = "image/jpeg" if rng.random() < 0.9 else "image/png"
    size = rng.randint(MIN_SIZE, MAX_SIZE)
    digest = hashlib.sha256(fake_image_bytes(image_id, size, content_type)).hexdigest()
    return ImageRef(id=image_id, content_type=content_type, size=size, sha256=digest)
