"""The durable store behind one small interface, ``Store`` (SQLite or PostgreSQL).

What must survive the gateway lives here, not only in process memory: the device
registry, every dwelling's consent (current state and append-only history), the record
of completed events (for de-duplication after a crash), the decision log, the
provision ledger, rejected input, the resident requests and API tokens, and the
statistics and analytics the gateway still holds. Callers depend on ``Store`` (``store.base``); the
composition roots open it with ``open_store(settings)`` (``store.opening``): the SQLite
file of one gateway (``store.sqlite``, the default), or a PostgreSQL database several
gateways share (``store.postgres``, ``INTERCOM_STORE=postgresql://...``).

One naming rule for every method of a store:

- ``record_*``: sync, buffered. Committed by the next ``flush`` (the event path: one
  transaction per batch, and the gateway acknowledges an event only after it).
- ``save_*``: async, committed before it returns (consent changes, the ledger's
  write-ahead intents, the request log).
- ``erase_*``, ``purge_*``, ``prune_*``: async deletions, committed before they return.
- Queries are nouns (``provisions``, ``ledger_summary``), or a noun and a participle
  for a yes or no (``dwelling_known``); they answer with ``store.results`` values.
"""

from intercom_gateway.store.base import Store
from intercom_gateway.store.opening import open_store, sqlite_path

__all__ = ["Store", "open_store", "sqlite_path"]
