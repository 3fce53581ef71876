"""Fixtures for the example plugin's tests.

``plugin_env`` gives each test a fresh plugin manager that loads entry points, restricted to
this plugin (``QUANTA_PLUGINS=example``) so that other plugins installed in the same
environment cannot interfere; ``quanta_node`` starts a real node on top of it and shuts it down.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import quanta
from quanta.plugins.manager import reset_plugin_manager

PLUGIN_VARS = ("QUANTA_DISABLE_PLUGIN_AUTOLOAD", "QUANTA_PLUGINS", "QUANTA_BLOCK_PLUGINS")


@pytest.fixture
def plugin_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Entry-point loading on, only ``example`` allowed; set more variables on the monkeypatch
    it yields, then call ``reset_plugin_manager()`` for them to take effect."""
    for var in PLUGIN_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("QUANTA_PLUGINS", "example")
    reset_plugin_manager()
    yield monkeypatch
    reset_plugin_manager()


@pytest.fixture
def quanta_node(plugin_env: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A real single-node Quanta (2 CPUs) for the test, shut down afterwards."""
    if quanta.is_initialized():
        quanta.shutdown()
    info = quanta.init(num_cpus=2)
    try:
        yield info
    finally:
        quanta.shutdown()
