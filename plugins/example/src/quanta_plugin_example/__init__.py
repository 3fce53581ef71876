"""quanta-plugin-example: ``as_completed`` and ``map_unordered`` for Quanta, as a plugin.

Installed, it publishes both under ``quanta.util`` (through the ``quanta_util_exports`` hook in
:mod:`quanta_plugin_example.plugin`), so that Ray code such as ``ray.util.as_completed(refs)``
runs unchanged with ``import quanta as ray``. They can also be imported from here directly.

It is also the template for third-party plugins: see README.md.
"""

from quanta_plugin_example._iterate import as_completed as as_completed
from quanta_plugin_example._iterate import map_unordered as map_unordered
from quanta_plugin_example._version import __version__ as __version__

__all__ = ["__version__", "as_completed", "map_unordered"]
