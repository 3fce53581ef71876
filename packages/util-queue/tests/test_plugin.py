"""The plugin: the entry point, the ``quanta_util_exports`` hook, and the names it publishes
under ``quanta.util``. No node is needed."""

from __future__ import annotations

import queue as stdqueue
import subprocess
import sys
import textwrap

import quanta
import quanta_util_queue
import quanta_util_queue.plugin
from quanta.plugins import get_plugin_manager
from quanta.plugins.manager import list_plugins, reset_plugin_manager, util_exports
from quanta_util_queue import Empty, Full, Queue
from quanta_util_queue import queue as queue_module


def test_hook_as_a_plain_function():
    exports = quanta_util_queue.plugin.quanta_util_exports()
    assert exports == {"queue": queue_module, "Queue": Queue}


def test_entry_point_is_installed():
    info = {p.name: p for p in list_plugins()}
    assert "util-queue" in info, "pip install -e packages/util-queue"
    assert info["util-queue"].distribution == "quanta-util-queue"
    assert info["util-queue"].version == quanta_util_queue.__version__
    assert info["util-queue"].hooks == ["quanta_util_exports"]


def test_published_under_quanta_util():
    assert quanta.util.queue is queue_module
    assert quanta.util.queue.Queue is Queue
    assert quanta.util.queue.Empty is Empty and quanta.util.queue.Full is Full
    assert quanta.util.Queue is Queue
    assert util_exports()["queue"] is queue_module


def test_registered_in_process(monkeypatch):
    """The docs' pattern: autoload off, the plugin registered by hand."""
    monkeypatch.setenv("QUANTA_DISABLE_PLUGIN_AUTOLOAD", "1")
    reset_plugin_manager()
    try:
        pm = get_plugin_manager()
        assert "queue" not in util_exports()
        pm.register(quanta_util_queue.plugin, name="util-queue")
        assert util_exports()["queue"] is queue_module
        pm.unregister(quanta_util_queue.plugin)
    finally:
        reset_plugin_manager()


def test_exceptions_subclass_the_stdlib_ones():
    assert issubclass(Empty, stdqueue.Empty) and issubclass(Full, stdqueue.Full)
    assert not issubclass(Empty, Full) and not issubclass(Full, Empty)


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60)


def test_attribute_access_in_a_fresh_process():
    proc = _fresh_python("""
        import quanta
        q = quanta.util.queue
        print(q.__name__, q.Queue.__name__, q.Empty.__name__, q.Full.__name__)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["quanta_util_queue.queue", "Queue", "Empty", "Full"]


def test_from_import_in_a_fresh_process():
    proc = _fresh_python("""
        from quanta.util.queue import Empty, Full, Queue
        import quanta.util.queue
        import quanta_util_queue.queue as m
        assert quanta.util.queue is m and Queue is m.Queue, (quanta.util.queue, m)
        assert Empty is m.Empty and Full is m.Full
        print("ok")
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_plugin_import_is_cheap():
    """Loading the plugin (what every process does when it builds its plugin manager) imports
    nothing heavy: the queue module itself is imported only when quanta.util.queue is used."""
    proc = _fresh_python("""
        import sys
        import quanta
        before = set(sys.modules)
        import quanta_util_queue.plugin
        new = sorted(set(sys.modules) - before)
        print(" ".join(new))
    """)
    assert proc.returncode == 0, proc.stderr
    new = set(proc.stdout.split())
    # quanta.plugins (pluggy) is the core's own cost; ours is the package and the plugin only
    ours = {m for m in new if not m.startswith(("pluggy", "quanta.plugins"))}
    assert ours == {"quanta_util_queue", "quanta_util_queue._version", "quanta_util_queue.plugin"}
