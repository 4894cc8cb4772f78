"""Fixtures of the pure core: the packaged policy and the sample partner registry."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from hypothesis import settings

from intercom_gateway.core.policy import PartnerRegistry, Policy, default_policy, sample_partners

NOW = datetime(2026, 4, 2, 9, 30, tzinfo=UTC)

# Module-level caches of the core, by module: scripts/mutate empties them before each test.
# The decision's compiled routes are a Router's state, built per test, so none are here.
_CORE_CACHES: dict[str, tuple[str, ...]] = {
    "intercom_gateway.core.encoding": (),
    "intercom_gateway.core.policy": (),
    "intercom_gateway.core.rejections": (),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under mutation testing only, cap every property test's examples.

    A surviving mutant runs every test that reaches its function; the property tests
    (up to 700 examples) are nine tenths of that time. scripts/mutate sets the cap
    (INTERCOM_MUTATION_EXAMPLES); a plain pytest run is untouched.
    """
    if "MUTANT_UNDER_TEST" not in os.environ:
        return
    cap = int(os.environ.get("INTERCOM_MUTATION_EXAMPLES", "25"))
    for item in items:
        test = getattr(item, "obj", None)
        # Where @settings(...) leaves them; the explicit settings beat any profile.
        current = getattr(test, "_hypothesis_internal_use_settings", None)
        if isinstance(current, settings) and current.max_examples > cap:
            capped = settings(current, max_examples=cap)
            test._hypothesis_internal_use_settings = capped  # type: ignore[union-attr]


@pytest.fixture(scope="session")
def policy() -> Policy:
    return default_policy()


@pytest.fixture(scope="session")
def partners() -> PartnerRegistry:
    return sample_partners()


@pytest.fixture(autouse=True)
def _fresh_core_caches() -> Iterator[None]:
    """Under mutation testing only, start every test with the core's caches empty.

    mutmut (scripts/mutate, docs/mutation.md) runs each mutant in a process forked from
    one that already ran the tests unmutated: a route compiled and cached there would
    answer for the mutant, and its map of which tests reach which function would credit
    only the first test that compiled a route. mutmut sets MUTANT_UNDER_TEST in every
    phase; a plain pytest run keeps its caches.
    """
    if "MUTANT_UNDER_TEST" in os.environ:
        _clear_core_caches()
    yield


def _clear_core_caches() -> None:
    for name, dicts in _CORE_CACHES.items():
        module = importlib.import_module(name)
        for attribute in dicts:
            cache = getattr(module, attribute, None)  # gone once decision holds a Router
            if isinstance(cache, dict):
                cache.clear()
        for value in vars(module).values():
            cache_clear = getattr(value, "cache_clear", None)  # functools.cache, lru_cache
            if callable(cache_clear):
                cache_clear()
