"""Tests for quanta.plugins: hook specs, the process-wide manager, entry-point loading."""

from __future__ import annotations

import inspect
import logging
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pluggy
import pytest
from quanta.plugins import get_plugin_manager, hookimpl, hookspecs
from quanta.plugins import manager as manager_mod
from quanta.plugins.manager import (
    PluginInfo,
    PluginLoadError,
    list_plugins,
    reset_plugin_manager,
    util_exports,
)

ENV_VARS = ("QUANTA_DISABLE_PLUGIN_AUTOLOAD", "QUANTA_PLUGINS", "QUANTA_BLOCK_PLUGINS")
HOOK_NAMES = {
    "quanta_util_exports",
    "quanta_accelerator_managers",
    "quanta_runtime_env_plugins",
    "quanta_task_events",
}
CORE_ROOT = Path(__file__).resolve().parents[1]
DOCS = CORE_ROOT.parents[1] / "docs" / "plugins.md"


@pytest.fixture(autouse=True)
def fresh_manager(monkeypatch: pytest.MonkeyPatch):
    """Every test starts with a new manager and entry-point autoloading off."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("QUANTA_DISABLE_PLUGIN_AUTOLOAD", "1")
    reset_plugin_manager()
    yield
    reset_plugin_manager()


class QueuePlugin:
    @hookimpl
    def quanta_util_exports(self) -> dict[str, object]:
        return {"Queue": list, "queue": textwrap}


class PoolPlugin:
    def __init__(self) -> None:
        self.events: list[dict] = []

    @hookimpl
    def quanta_util_exports(self) -> dict[str, object]:
        return {"ActorPool": dict}

    @hookimpl
    def quanta_task_events(self, events: list[dict]) -> None:
        self.events.extend(events)


@pytest.fixture
def inline_plugins():
    """Two plugins registered in-process, unregistered afterwards."""
    pm = get_plugin_manager()
    plugins = {"queue-plugin": QueuePlugin(), "pool-plugin": PoolPlugin()}
    for name, plugin in plugins.items():
        assert pm.register(plugin, name=name) == name
    yield plugins
    for plugin in plugins.values():
        if pm.is_registered(plugin):
            pm.unregister(plugin)


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write real distributions (``*.dist-info``) with ``quanta`` entry points into tmp_path.

    ``make(entry_points={name: module}, modules={module: source})`` puts tmp_path on sys.path and
    turns autoloading back on; the modules are forgotten again after the test.
    """
    written: list[str] = []

    def make(
        entry_points: dict[str, str],
        modules: dict[str, str],
        dist: str = "fake_plugin",
        version: str = "1.0",
    ) -> None:
        for module, source in modules.items():
            (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
            written.append(module)
        info = tmp_path / f"{dist}-{version}.dist-info"
        info.mkdir()
        name = dist.replace("_", "-")
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        lines = "".join(f"{ep} = {target}\n" for ep, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[quanta]\n{lines}")
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delenv("QUANTA_DISABLE_PLUGIN_AUTOLOAD", raising=False)
        reset_plugin_manager()

    yield make
    for module in written:
        sys.modules.pop(module, None)


ALPHA = """
from quanta.plugins import hookimpl

@hookimpl
def quanta_util_exports():
    return {"Alpha": "alpha"}
"""
BETA = """
from quanta.plugins import hookimpl

@hookimpl
def quanta_accelerator_managers():
    return ["beta-manager"]
"""


def names(pm: pluggy.PluginManager) -> set[str]:
    return {name for name, plugin in pm.list_name_plugin() if plugin is not None}


# -- the manager itself ---------------------------------------------------------------------


def test_one_manager_per_process() -> None:
    pm = get_plugin_manager()
    assert get_plugin_manager() is pm
    reset_plugin_manager()
    assert get_plugin_manager() is not pm


def test_concurrent_first_use_creates_one_manager() -> None:
    seen: list[pluggy.PluginManager] = []
    threads = [threading.Thread(target=lambda: seen.append(get_plugin_manager())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(pm) for pm in seen}) == 1


def test_entry_points_are_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    calls = []
    real = importlib.metadata.entry_points

    def counting(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(importlib.metadata, "entry_points", counting)
    monkeypatch.delenv("QUANTA_DISABLE_PLUGIN_AUTOLOAD")
    reset_plugin_manager()
    for _ in range(3):
        get_plugin_manager()
    util_exports()
    list_plugins()
    assert calls == [{"group": "quanta"}]


def test_hookspecs_are_the_documented_four() -> None:
    pm = get_plugin_manager()
    specs = {name for name in vars(pm.hook) if getattr(pm.hook, name).has_spec()}
    assert specs == HOOK_NAMES
    assert all(not getattr(pm.hook, n).spec.opts["firstresult"] for n in HOOK_NAMES)


def test_importing_the_manager_is_cheap() -> None:
    code = textwrap.dedent(
        """
        import sys
        import quanta  # whatever the package itself imports is not this module's cost
        before = set(sys.modules)
        import quanta.plugins.manager as m
        new = set(sys.modules) - before
        assert "importlib.metadata" not in new, sorted(new)
        assert m._manager is None
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(CORE_ROOT / "src"), *sys.path])}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# -- inline plugins and hook validation -----------------------------------------------------


def test_inline_plugins_are_called(inline_plugins) -> None:
    pm = get_plugin_manager()
    events = [{"task_id": "t1", "state": "RUNNING"}]
    assert pm.hook.quanta_task_events(events=events) == []
    assert inline_plugins["pool-plugin"].events == events
    assert pm.hook.quanta_accelerator_managers() == []


def test_task_events_without_plugins_is_a_no_op() -> None:
    assert get_plugin_manager().hook.quanta_task_events(events=[{"state": "FINISHED"}]) == []


class MisspeltMarked:
    @hookimpl
    def quanta_util_export(self):  # missing the final "s"
        return {}


class MisspeltUnmarked:
    def quanta_task_event(self, events):  # not marked, still reserved by its prefix
        pass


@pytest.mark.parametrize(
    ("plugin", "suggestion"),
    [(MisspeltMarked(), "quanta_util_exports"), (MisspeltUnmarked(), "quanta_task_events")],
)
def test_misspelt_hook_fails_loudly(plugin: object, suggestion: str) -> None:
    pm = get_plugin_manager()
    with pytest.raises(pluggy.PluginValidationError, match="unknown hook") as info:
        pm.register(plugin, name="typo")
    assert f"did you mean {suggestion!r}" in str(info.value)
    assert "'typo'" in str(info.value)
    assert not pm.is_registered(plugin) and not pm.has_plugin("typo")
    pm.check_pending()  # nothing half-registered is left behind


def test_optional_unknown_hook_is_allowed() -> None:
    class Optional:
        @hookimpl(optionalhook=True)
        def quanta_future_hook(self):
            pass

    pm = get_plugin_manager()
    plugin = Optional()
    pm.register(plugin)
    pm.check_pending()
    pm.unregister(plugin)


def test_wrong_hook_arguments_are_rejected() -> None:
    class BadArgs:
        @hookimpl
        def quanta_task_events(self, evnts):
            pass

    pm = get_plugin_manager()
    with pytest.raises(pluggy.PluginValidationError, match="evnts"):
        pm.register(BadArgs())


def test_helpers_that_are_not_routines_are_ignored() -> None:
    class Plugin:
        quanta_settings = {"not": "a hook"}

    pm = get_plugin_manager()
    plugin = Plugin()
    pm.register(plugin)
    assert pm.get_hookcallers(plugin) == []
    pm.unregister(plugin)


# -- util exports ---------------------------------------------------------------------------


def test_util_exports_are_merged(inline_plugins) -> None:
    assert util_exports() == {"Queue": list, "queue": textwrap, "ActorPool": dict}


def test_util_exports_cache_follows_registration(inline_plugins) -> None:
    assert "ActorPool" in util_exports()
    get_plugin_manager().unregister(name="pool-plugin")
    assert "ActorPool" not in util_exports()
    util_exports()["mutated"] = 1
    assert "mutated" not in util_exports()


def test_duplicate_util_export_names_both_plugins(inline_plugins) -> None:
    class AnotherQueue:
        @hookimpl
        def quanta_util_exports(self):
            return {"queue": object()}

    pm = get_plugin_manager()
    pm.register(AnotherQueue(), name="another-queue")
    with pytest.raises(RuntimeError, match="queue") as info:
        util_exports()
    assert "'queue-plugin'" in str(info.value) and "'another-queue'" in str(info.value)
    pm.unregister(name="another-queue")
    assert "queue" in util_exports()


@pytest.mark.parametrize(("result", "match"), [(["Queue"], "must return a dict"), ({1: 2}, "1")])
def test_util_exports_rejects_bad_results(result: object, match: str) -> None:
    class Bad:
        @hookimpl
        def quanta_util_exports(self):
            return result

    get_plugin_manager().register(Bad(), name="bad")
    with pytest.raises(TypeError, match=match):
        util_exports()


def test_util_exports_none_publishes_nothing() -> None:
    class Nothing:
        @hookimpl
        def quanta_util_exports(self):
            return None

    get_plugin_manager().register(Nothing())
    assert util_exports() == {}


# -- entry points and environment variables -------------------------------------------------


def test_entry_points_are_loaded(fake_dist) -> None:
    fake_dist(
        {"alpha": "fake_alpha_mod", "beta": "fake_beta_mod"},
        {"fake_alpha_mod": ALPHA, "fake_beta_mod": BETA},
    )
    pm = get_plugin_manager()
    assert {"alpha", "beta"} <= names(pm)
    assert util_exports()["Alpha"] == "alpha"
    assert "beta-manager" in [m for ms in pm.hook.quanta_accelerator_managers() for m in ms]


def test_disable_autoload(fake_dist, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dist({"alpha": "fake_alpha_mod"}, {"fake_alpha_mod": ALPHA})
    monkeypatch.setenv("QUANTA_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("QUANTA_PLUGINS", "alpha")  # the off switch wins
    reset_plugin_manager()
    assert "alpha" not in names(get_plugin_manager())
    assert "fake_alpha_mod" not in sys.modules


def test_allow_list(fake_dist, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    fake_dist(
        {"alpha": "fake_alpha_mod", "beta": "fake_beta_mod"},
        {"fake_alpha_mod": ALPHA, "fake_beta_mod": BETA},
    )
    monkeypatch.setenv("QUANTA_PLUGINS", " alpha , not-installed")
    with caplog.at_level(logging.WARNING, logger=manager_mod.__name__):
        loaded = names(get_plugin_manager())
    assert "alpha" in loaded and "beta" not in loaded
    assert "fake_beta_mod" not in sys.modules
    assert "not-installed" in caplog.text


def test_block_list(fake_dist, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dist(
        {"alpha": "fake_alpha_mod", "beta": "fake_beta_mod"},
        {"fake_alpha_mod": ALPHA, "fake_beta_mod": BETA},
    )
    monkeypatch.setenv("QUANTA_BLOCK_PLUGINS", "alpha")
    monkeypatch.setenv("QUANTA_PLUGINS", "alpha,beta")  # blocking wins over allowing
    loaded = names(get_plugin_manager())
    assert "beta" in loaded and "alpha" not in loaded
    assert "fake_alpha_mod" not in sys.modules


def test_import_failure_names_plugin_and_distribution(fake_dist, monkeypatch) -> None:
    fake_dist(
        {"broken": "fake_broken_mod"},
        {"fake_broken_mod": "raise ImportError('boom')\n"},
        dist="broken_dist",
        version="0.3",
    )
    with pytest.raises(PluginLoadError) as info:
        get_plugin_manager()
    message = str(info.value)
    assert "'broken'" in message and "'broken-dist'" in message and "boom" in message
    assert isinstance(info.value.__cause__, ImportError)
    with pytest.raises(PluginLoadError):  # nothing half-built was kept
        get_plugin_manager()
    monkeypatch.setenv("QUANTA_BLOCK_PLUGINS", "broken")
    assert "broken" not in names(get_plugin_manager())


def test_misspelt_hook_in_entry_point_fails_loudly(fake_dist) -> None:
    source = "def quanta_util_export():\n    return {}\n"
    fake_dist({"typo": "fake_typo_mod"}, {"fake_typo_mod": source})
    with pytest.raises(PluginLoadError, match="did you mean 'quanta_util_exports'") as info:
        get_plugin_manager()
    assert "'typo'" in str(info.value) and "'fake-plugin'" in str(info.value)
    assert isinstance(info.value.__cause__, pluggy.PluginValidationError)


def test_same_entry_point_name_in_two_distributions(fake_dist) -> None:
    fake_dist({"alpha": "fake_alpha_mod"}, {"fake_alpha_mod": ALPHA})
    fake_dist({"alpha": "fake_beta_mod"}, {"fake_beta_mod": BETA}, dist="other_plugin")
    with pytest.raises(PluginLoadError, match="already taken") as info:
        get_plugin_manager()
    assert "'fake-plugin'" in str(info.value) and "'other-plugin'" in str(info.value)


# -- list_plugins ---------------------------------------------------------------------------


def test_list_plugins_inline(inline_plugins) -> None:
    infos = {info.name: info for info in list_plugins()}
    assert infos["pool-plugin"] == PluginInfo(
        "pool-plugin", None, None, ["quanta_task_events", "quanta_util_exports"]
    )
    assert infos["queue-plugin"].hooks == ["quanta_util_exports"]


def test_list_plugins_entry_points(fake_dist) -> None:
    fake_dist(
        {"beta": "fake_beta_mod", "alpha": "fake_alpha_mod"},
        {"fake_alpha_mod": ALPHA, "fake_beta_mod": BETA},
    )
    infos = [info for info in list_plugins() if info.name in {"alpha", "beta"}]
    assert infos == [
        PluginInfo("alpha", "fake-plugin", "1.0", ["quanta_util_exports"]),
        PluginInfo("beta", "fake-plugin", "1.0", ["quanta_accelerator_managers"]),
    ]


# -- documentation --------------------------------------------------------------------------


def test_every_hook_is_documented_with_its_signature() -> None:
    if not DOCS.parent.is_dir():
        pytest.skip("not running from the monorepo checkout")
    text = DOCS.read_text(encoding="utf-8")
    specs = {
        name: fn
        for name, fn in vars(hookspecs).items()
        if name.startswith("quanta_") and hasattr(fn, "quanta_spec")
    }
    assert set(specs) == HOOK_NAMES
    for name, fn in specs.items():
        assert f"`{name}{inspect.signature(fn)}`" in text, name
        assert fn.__doc__ and "firstresult" in fn.__doc__, name
