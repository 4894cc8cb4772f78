"""Fixtures shared by every tier."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from intercom_gateway.broker.mosquitto import Mosquitto
from intercom_gateway.core.registry import Registry, generate_registry
from intercom_gateway.qa import runner
from intercom_gateway.qa.postgres import PostgresServer
from intercom_gateway.store import Store
from tests.stores import Databases
from tests.transports import MemoryTransport, MosquittoTransport, Transport

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLE_SERVICES = ("concierge", "elder-watch", "parcel-unlock")
SAMPLE_CONTRACTORS = ("example-kanri", "kanri-kumiai-b001")  # §5(1)①, both of b001


@pytest.fixture(scope="session")
def fleet_registry() -> Registry:
    """Two buildings of four dwellings, every dwelling using the three sample services."""
    return generate_registry(buildings=2, dwellings=4, services=SAMPLE_SERVICES)


@pytest.fixture(scope="session")
def broker(
    tmp_path_factory: pytest.TempPathFactory, fleet_registry: Registry
) -> Iterator[Mosquitto]:
    """One real Mosquitto per test session, on a free loopback port, running the
    project's own mosquitto.conf with generated credentials. Started only by a test
    that asks for it: the broker tier, and the Mosquitto cases (marked ``broker``) of
    the contract and component tests that run on both buses."""
    workdir = tmp_path_factory.mktemp("mosquitto")
    with runner.start_broker(
        workdir, fleet_registry, SAMPLE_SERVICES, SAMPLE_CONTRACTORS
    ) as mosquitto:
        yield mosquitto


@pytest.fixture(params=["memory", pytest.param("mosquitto", marks=pytest.mark.broker)])
def transport(request: pytest.FixtureRequest) -> Transport:
    """The in-memory broker, then the real Mosquitto: tests written once run on both."""
    if request.param == "memory":
        return MemoryTransport()
    return MosquittoTransport(request.getfixturevalue("broker"))


# --- stores: SQLite and PostgreSQL -------------------------------------------------------

STORES = ("sqlite", "postgres")
StoreFactory = Callable[[], AbstractAsyncContextManager[Store]]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store",
        choices=STORES,
        default="sqlite",
        help="the store of every gateway the tests start through Settings (gateway_settings,"
        " the runner's in-process gateway, subprocess gateways): postgres gives each test a"
        " fresh PostgreSQL database (INTERCOM_STORE)",
    )


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL of our own per session (initdb + pg_ctl, a free port), started
    only by a test that asks for it.

    Its folder is not under pytest's temp root: run as root, the cluster belongs to the
    ``postgres`` user, and every pytest session that starts on the machine (another
    checkout's, a nested one) sets ``/tmp/pytest-of-root`` back to 0700, which would
    take the running server's data folder from under it."""
    with (
        tempfile.TemporaryDirectory(prefix="intercom-pg-") as folder,
        PostgresServer(Path(folder) / "pg") as server,
    ):
        yield server


@pytest.fixture(scope="session")
def pg_databases(postgres_server: PostgresServer) -> Databases:
    return Databases(postgres_server)


@pytest.fixture
def postgres_dsn(pg_databases: Databases) -> Iterator[str]:
    """A fresh database with the store's tables, for this test alone; dropped after."""
    dsn = pg_databases.create()
    yield dsn
    pg_databases.drop(dsn)


@pytest.fixture(autouse=True)
def _store_option(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--store=postgres``: every Settings made in this test names a fresh database."""
    if request.config.getoption("store") == "postgres":
        monkeypatch.setenv("INTERCOM_STORE", request.getfixturevalue("postgres_dsn"))


@pytest.fixture(params=STORES)
def both_stores(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test once on SQLite, once on PostgreSQL, through the settings' store
    (``INTERCOM_STORE``): for the gateway's own tests (``gateway_settings``)."""
    if request.param == "postgres":
        monkeypatch.setenv("INTERCOM_STORE", request.getfixturevalue("postgres_dsn"))
    else:
        monkeypatch.delenv("INTERCOM_STORE", raising=False)
    return str(request.param)


@pytest.fixture(params=STORES)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Opens this test's store, SQLite then PostgreSQL: the same store at every call."""
    if request.param == "postgres":
        from intercom_gateway.store.postgres import PostgresStore

        dsn: str = request.getfixturevalue("postgres_dsn")
        return lambda: PostgresStore.open(dsn)
    from intercom_gateway.store.sqlite import SqliteStore

    path = tmp_path / "store.sqlite"
    return lambda: SqliteStore.open(path)


@pytest.fixture
async def any_store(store_factory: StoreFactory) -> AsyncIterator[Store]:
    """This test's store, open: on SQLite, then on PostgreSQL."""
    async with store_factory() as store:
        yield store
