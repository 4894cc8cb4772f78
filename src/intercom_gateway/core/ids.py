"""Random event and decision ids, cheaply (re-exported by ``core.models``)."""

from __future__ import annotations

import os
from uuid import UUID


class _RandomIds:
    """Version-4 UUIDs, as ``uuid.uuid4`` makes them, from os.urandom read 4 KiB at a time.

    ``uuid4`` reads 16 bytes per id, and os.urandom releases the GIL: on the event path,
    with the store's SQLite thread waiting for it, each id could cost a thread switch. Same
    source of randomness, one read per 256 ids.
    """

    _SIZE = 16 * 256

    def __init__(self) -> None:
        self._pool = b""
        self._next = 0
        os.register_at_fork(after_in_child=self.forget)  # a child never reuses our bytes

    def forget(self) -> None:
        self._pool, self._next = b"", 0

    def __call__(self) -> UUID:
        start = self._next
        if start >= len(self._pool):
            self._pool, start = os.urandom(self._SIZE), 0
        self._next = start + 16
        return UUID(bytes=self._pool[start : start + 16], version=4)


random_uuid = _RandomIds()
