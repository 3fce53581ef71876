"""The process-wide plugin manager.

Importing this module is cheap: :mod:`importlib.metadata` is imported and the ``quanta`` entry
points are loaded only on the first call of :func:`get_plugin_manager` (directly or through
:func:`util_exports` / :func:`list_plugins`). :func:`installed_plugins` reads the entry points
without importing any plugin, for ``quanta plugins``.

Environment variables, read when the manager is created:

``QUANTA_DISABLE_PLUGIN_AUTOLOAD``
    ``1`` (or ``true``/``yes``/``on``) loads no entry points at all.
``QUANTA_PLUGINS``
    Comma-separated entry-point names: only these are loaded.
``QUANTA_BLOCK_PLUGINS``
    Comma-separated entry-point names that are never loaded (wins over ``QUANTA_PLUGINS``).
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs

__all__ = [
    "ENTRY_POINT_GROUP",
    "InstalledPlugin",
    "PluginInfo",
    "PluginLoadError",
    "QuantaPluginManager",
    "get_plugin_manager",
    "installed_plugins",
    "list_plugins",
    "reset_plugin_manager",
    "util_exports",
]

ENTRY_POINT_GROUP = "quanta"
_HOOK_PREFIX = "quanta_"
_TRUE = {"1", "true", "yes", "on"}

logger = logging.getLogger(__name__)


class PluginLoadError(RuntimeError):
    """An entry-point plugin could not be imported or registered.

    ``plugin`` is the entry point's name (the plugin's), when the error is about one plugin.
    """

    def __init__(self, message: str, *, plugin: str | None = None) -> None:
        super().__init__(message)
        self.plugin = plugin


@dataclass
class PluginInfo:
    """One registered plugin, as shown by ``quanta plugins``."""

    name: str
    distribution: str | None  # None for plugins registered in-process
    version: str | None
    hooks: list[str] = field(default_factory=list)


@dataclass
class InstalledPlugin:
    """One installed ``quanta`` entry point, as found by :func:`installed_plugins`."""

    name: str  # the entry point's key: the plugin's name
    value: str  # what it points at, e.g. "my_pkg.plugin"
    distribution: str | None  # None when importlib.metadata cannot tell
    version: str | None
    #: The environment variable that keeps the plugin manager from loading it
    #: ("QUANTA_DISABLE_PLUGIN_AUTOLOAD", "QUANTA_BLOCK_PLUGINS" or "QUANTA_PLUGINS"), or None.
    skipped_by: str | None = None


class QuantaPluginManager(pluggy.PluginManager):
    """A :class:`pluggy.PluginManager` that rejects unknown ``quanta_*`` hooks at registration."""

    def __init__(self) -> None:
        super().__init__(ENTRY_POINT_GROUP)
        self.add_hookspecs(hookspecs)
        self.dist_info: dict[str, tuple[str, str | None]] = {}  # name -> (distribution, version)
        self.util_exports_cache: dict[str, object] | None = None

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> pluggy.HookimplOpts | None:
        opts = super().parse_hookimpl_opts(plugin, name)
        if (
            opts is None
            and name.startswith(_HOOK_PREFIX)
            and inspect.isroutine(getattr(plugin, name))
        ):
            # The prefix is reserved: an unmarked (or misspelt) quanta_* function is a hook too,
            # so that a typo cannot be silently ignored.
            opts = pluggy.HookimplOpts(
                wrapper=False,
                hookwrapper=False,
                optionalhook=False,
                tryfirst=False,
                trylast=False,
                specname=None,
            )
        return opts

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        was_registered = self.is_registered(plugin)
        try:
            plugin_name = super().register(plugin, name)
            if plugin_name is not None:
                self._check_known_hooks(plugin, plugin_name)
        except Exception:
            if not was_registered and self.is_registered(plugin):
                self.unregister(plugin)  # leave no half-registered plugin behind
            raise
        self.util_exports_cache = None
        return plugin_name

    def unregister(self, plugin: Any | None = None, name: str | None = None) -> Any | None:
        key = name if name is not None else self.get_name(plugin)
        result = super().unregister(plugin, name)
        self.util_exports_cache = None
        if key is not None:
            self.dist_info.pop(key, None)
        return result

    def _check_known_hooks(self, plugin: Any, plugin_name: str) -> None:
        import difflib  # deferred: only needed for the error message, keeps import cheap

        known = sorted(n for n in vars(self.hook) if getattr(self.hook, n).has_spec())
        for caller in self.get_hookcallers(plugin) or []:
            own = [i for i in caller.get_hookimpls() if i.plugin is plugin and not i.optionalhook]
            if caller.has_spec() or not own:
                continue
            close = difflib.get_close_matches(caller.name, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise pluggy.PluginValidationError(
                plugin,
                f"Plugin {plugin_name!r} implements unknown hook {caller.name!r}; {hint}"
                f"known hooks: {', '.join(known)}",
            )


_lock = threading.RLock()
_manager: QuantaPluginManager | None = None
_building: QuantaPluginManager | None = None


def _env_names(var: str) -> set[str]:
    return {n.strip() for n in os.environ.get(var, "").split(",") if n.strip()}


def _autoload_disabled() -> bool:
    return os.environ.get("QUANTA_DISABLE_PLUGIN_AUTOLOAD", "").strip().lower() in _TRUE


def _skipped_by(name: str, allowed: set[str], blocked: set[str]) -> str | None:
    """The variable that keeps entry point ``name`` from loading (autoload being on), or None."""
    if name in blocked:
        return "QUANTA_BLOCK_PLUGINS"
    if allowed and name not in allowed:
        return "QUANTA_PLUGINS"
    return None


def _entry_points() -> list[Any]:
    from importlib.metadata import entry_points  # deferred: costs import time

    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _dist_of(ep: Any) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    return (dist.metadata["Name"], dist.version) if dist is not None else (None, None)


def _load_entry_points(pm: QuantaPluginManager) -> None:
    if _autoload_disabled():
        return
    allowed, blocked = _env_names("QUANTA_PLUGINS"), _env_names("QUANTA_BLOCK_PLUGINS")
    eps = _entry_points()
    for missing in sorted(allowed - {ep.name for ep in eps}):
        logger.warning(
            "QUANTA_PLUGINS names %r, but no %r entry point has that name",
            missing,
            ENTRY_POINT_GROUP,
        )
    for ep in eps:
        if _skipped_by(ep.name, allowed, blocked) is not None:
            continue
        dist_name, version = _dist_of(ep)
        dist_name = dist_name or "<unknown distribution>"
        where = f"plugin {ep.name!r} ({ep.value}) from distribution {dist_name!r}"
        if pm.has_plugin(ep.name):
            other = pm.dist_info.get(ep.name, ("<in-process>", None))[0]
            raise PluginLoadError(
                f"Cannot load {where}: the name {ep.name!r} is already taken "
                f"by distribution {other!r}; block one with "
                "QUANTA_BLOCK_PLUGINS",
                plugin=ep.name,
            )
        try:
            plugin = ep.load()
        except Exception as exc:
            raise PluginLoadError(
                f"Cannot import {where}: {type(exc).__name__}: {exc} "
                f"(set QUANTA_BLOCK_PLUGINS={ep.name} to skip it)",
                plugin=ep.name,
            ) from exc
        try:
            pm.register(plugin, name=ep.name)
        except Exception as exc:
            raise PluginLoadError(f"Cannot register {where}: {exc}", plugin=ep.name) from exc
        pm.dist_info[ep.name] = (dist_name, version)


def get_plugin_manager() -> QuantaPluginManager:
    """Return the process's plugin manager, creating it and loading entry points on first use."""
    global _manager, _building
    if _manager is not None:
        return _manager
    with _lock:
        if _manager is not None:
            return _manager
        if _building is not None:  # re-entered by a plugin imported while loading
            return _building
        _building = pm = QuantaPluginManager()
        try:
            _load_entry_points(pm)
            pm.check_pending()
        finally:
            _building = None
        _manager = pm
        return pm


def reset_plugin_manager() -> None:
    """Forget the manager (for tests); the next use re-reads the environment and entry points."""
    global _manager
    with _lock:
        _manager = None


def util_exports() -> dict[str, object]:
    """Merge what every plugin publishes under ``quanta.util``.

    Raises :class:`RuntimeError` naming both plugins when a name is published twice.
    """
    pm = get_plugin_manager()
    cached = pm.util_exports_cache
    if cached is None:
        cached = {}
        owner: dict[str, str] = {}  # name -> plugin that published it
        for impl in reversed(pm.hook.quanta_util_exports.get_hookimpls()):  # pluggy call order
            if impl.wrapper or impl.hookwrapper:
                continue
            result = impl.function()
            if result is None:
                continue
            if not isinstance(result, dict):
                raise TypeError(
                    f"Plugin {impl.plugin_name!r}: quanta_util_exports() must return "
                    f"a dict, not {type(result).__name__}"
                )
            for name, obj in result.items():
                if not (isinstance(name, str) and name.isidentifier()):
                    raise TypeError(
                        f"Plugin {impl.plugin_name!r}: quanta_util_exports() name "
                        f"{name!r} is not a valid identifier"
                    )
                if name in owner:
                    raise RuntimeError(
                        f"quanta.util.{name} is published by two plugins: "
                        f"{owner[name]!r} and {impl.plugin_name!r}"
                    )
                owner[name], cached[name] = impl.plugin_name, obj
        pm.util_exports_cache = cached
    return dict(cached)


def list_plugins() -> list[PluginInfo]:
    """Describe every registered plugin, sorted by name."""
    pm = get_plugin_manager()
    infos = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # blocked via pm.set_blocked
            continue
        dist, version = pm.dist_info.get(name, (None, None))
        hooks = sorted(c.name for c in pm.get_hookcallers(plugin) or [])
        infos.append(PluginInfo(name, dist, version, hooks))
    return sorted(infos, key=lambda info: info.name)


def installed_plugins() -> list[InstalledPlugin]:
    """Describe every installed ``quanta`` entry point, sorted by name, importing none of them.

    ``skipped_by`` names the environment variable that keeps the plugin manager from loading
    one (``QUANTA_DISABLE_PLUGIN_AUTOLOAD``, ``QUANTA_BLOCK_PLUGINS`` or ``QUANTA_PLUGINS``,
    as set now); ``None`` means the manager loads it. Each call reads the entry points afresh.
    """
    allowed, blocked = _env_names("QUANTA_PLUGINS"), _env_names("QUANTA_BLOCK_PLUGINS")
    disabled = _autoload_disabled()
    found = []
    for ep in _entry_points():
        dist, version = _dist_of(ep)
        skipped_by = (
            "QUANTA_DISABLE_PLUGIN_AUTOLOAD" if disabled else _skipped_by(ep.name, allowed, blocked)
        )
        found.append(InstalledPlugin(ep.name, ep.value, dist, version, skipped_by))
    return found
