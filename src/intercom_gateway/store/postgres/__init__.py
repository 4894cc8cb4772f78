"""The PostgreSQL store (``PostgresStore``): one database shared by several gateways.

Needs the ``postgres`` extra (asyncpg). Its modules mirror the SQLite store's table
families: ``schema`` (tables and versioned migrations), ``events`` (the event path's
batch), ``consents``, ``queries`` (§8 queries, requests, retention) and ``tokens``.
"""

from intercom_gateway.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
