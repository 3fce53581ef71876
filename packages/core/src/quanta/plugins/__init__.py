"""Quanta's plugin system: hook specifications and the process-wide plugin manager.

See ``docs/plugins.md`` for how to write, register, test and publish a plugin.
"""

from quanta.plugins.hookspecs import hookimpl as hookimpl
from quanta.plugins.manager import get_plugin_manager as get_plugin_manager

__all__ = ["get_plugin_manager", "hookimpl"]
