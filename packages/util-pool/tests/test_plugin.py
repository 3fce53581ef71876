"""The plugin publishes ActorPool under quanta.util (installed entry point and in-process)."""

from __future__ import annotations

import pytest
import quanta_util_pool.plugin
from quanta.plugins import get_plugin_manager
from quanta.plugins.manager import list_plugins, reset_plugin_manager, util_exports


def test_entry_point_is_installed():
    info = {p.name: p for p in list_plugins()}
    assert "util-pool" in info
    assert info["util-pool"].distribution == "quanta-util-pool"
    assert info["util-pool"].hooks == ["quanta_util_exports"]


def test_hook_returns_the_class():
    from quanta_util_pool import actor_pool

    exports = quanta_util_pool.plugin.quanta_util_exports()
    assert exports == {"ActorPool": actor_pool.ActorPool, "actor_pool": actor_pool}


@pytest.fixture
def plugin_manager(monkeypatch):
    monkeypatch.setenv("QUANTA_DISABLE_PLUGIN_AUTOLOAD", "1")
    reset_plugin_manager()
    pm = get_plugin_manager()
    pm.register(quanta_util_pool.plugin, name="util-pool")
    yield pm
    pm.unregister(quanta_util_pool.plugin)
    reset_plugin_manager()


def test_registered_in_process(plugin_manager):
    import quanta.util
    from quanta_util_pool.actor_pool import ActorPool

    assert util_exports()["ActorPool"] is ActorPool
    assert quanta.util.ActorPool is ActorPool
