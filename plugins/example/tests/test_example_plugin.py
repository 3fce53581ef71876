"""The example plugin, installed: found through its entry point, switched off by the plugin
environment variables, and its helpers working on a real Quanta node."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap
import time

import pytest
import quanta
import quanta.util
import quanta_plugin_example
from quanta.exceptions import GetTimeoutError
from quanta.plugins.manager import PluginInfo, list_plugins, reset_plugin_manager
from quanta_plugin_example import plugin

pytestmark = pytest.mark.timeout(90)


@quanta.remote
def sleep_then_return(seconds: float, value: object) -> object:
    time.sleep(seconds)
    return value


@quanta.remote
def square(x: int) -> int:
    return x * x


@quanta.remote
def fail(message: str) -> None:
    raise ValueError(message)


# -- registration ---------------------------------------------------------------------------


def test_entry_point_is_declared() -> None:
    (ep,) = [ep for ep in importlib.metadata.entry_points(group="quanta") if ep.name == "example"]
    assert ep.value == "quanta_plugin_example.plugin"
    assert ep.dist is not None and ep.dist.metadata["Name"] == "quanta-plugin-example"
    assert ep.dist.version == quanta_plugin_example.__version__


def test_loaded_through_the_entry_point(plugin_env) -> None:
    info = {p.name: p for p in list_plugins()}["example"]
    assert info == PluginInfo(
        "example",
        "quanta-plugin-example",
        quanta_plugin_example.__version__,
        ["quanta_util_exports"],
    )
    assert quanta.util.as_completed is quanta_plugin_example.as_completed
    from quanta.util import map_unordered

    assert map_unordered is quanta_plugin_example.map_unordered


@pytest.mark.parametrize(
    ("var", "value"),
    [("QUANTA_BLOCK_PLUGINS", "other, example"), ("QUANTA_DISABLE_PLUGIN_AUTOLOAD", "1")],
)
def test_switched_off_by_environment(plugin_env, var: str, value: str) -> None:
    plugin_env.setenv(var, value)
    reset_plugin_manager()
    assert "example" not in {p.name for p in list_plugins()}
    with pytest.raises(AttributeError, match="as_completed"):
        quanta.util.as_completed  # noqa: B018 - the lookup is the test


def test_hook_publishes_both_helpers() -> None:
    assert plugin.quanta_util_exports() == {
        "as_completed": quanta_plugin_example.as_completed,
        "map_unordered": quanta_plugin_example.map_unordered,
    }


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: quanta_plugin_example.as_completed([], chunk_size=0), ValueError),
        (lambda: quanta_plugin_example.map_unordered(square, [], chunk_size=True), ValueError),
        (lambda: quanta_plugin_example.map_unordered(square, [], backpressure_size=0), ValueError),
        (lambda: quanta_plugin_example.map_unordered(len, [1]), TypeError),
    ],
)
def test_bad_arguments_raise_at_the_call(call, error) -> None:
    with pytest.raises(error):
        call()  # no cluster needed: nothing is submitted before the checks


# -- on a real node ---------------------------------------------------------------------------


def test_as_completed_yields_the_fast_task_first(quanta_node) -> None:
    refs = [sleep_then_return.remote(1.5, "slow"), sleep_then_return.remote(0, "fast")]
    results = list(quanta.util.as_completed(refs, chunk_size=1))
    assert results == ["fast", "slow"]


def test_as_completed_can_yield_refs(quanta_node) -> None:
    refs = [square.remote(i) for i in range(12)]
    got = list(quanta.util.as_completed(refs, yield_obj_refs=True, chunk_size=5))
    assert sorted(got, key=refs.index) == refs
    assert sorted(quanta.get(got)) == [i * i for i in range(12)]


def test_as_completed_raises_a_task_error_after_earlier_values(quanta_node) -> None:
    ok = square.remote(3)
    quanta.wait([ok])
    it = quanta.util.as_completed([ok, fail.remote("boom")], chunk_size=2)
    assert next(it) == 9
    with pytest.raises(Exception, match="boom"):
        next(it)


def test_as_completed_timeout(quanta_node) -> None:
    it = quanta.util.as_completed([sleep_then_return.remote(30, None)], timeout=0.2)
    with pytest.raises(GetTimeoutError, match="1 still pending"):
        next(it)


def test_map_unordered_keeps_at_most_backpressure_size_in_flight(quanta_node) -> None:
    consumed = []

    def items():
        for i in range(20):
            consumed.append(i)
            yield i

    it = quanta.util.map_unordered(square, items(), backpressure_size=4, chunk_size=1)
    assert consumed == []  # lazy: nothing submitted before the first next()
    first = next(it)
    assert len(consumed) == 4  # the fifth item waits until one of the first four finished
    assert sorted([first, *it]) == [i * i for i in range(20)]


def test_map_unordered_with_an_actor_method(quanta_node) -> None:
    @quanta.remote
    class Doubler:
        def double(self, x: int) -> int:
            return 2 * x

    doubler = Doubler.remote()
    assert sorted(quanta.util.map_unordered(doubler.double, range(5))) == [0, 2, 4, 6, 8]


# -- a fresh process, as a user runs it ------------------------------------------------------

RAY_PROGRAM = textwrap.dedent(
    """
    import quanta as ray
    import quanta.util

    ray.init(num_cpus=2)

    @ray.remote
    def square(x):
        return x * x

    @ray.remote
    def sum_of_squares(n):  # runs in a worker, which loads the plugin there
        return sum(ray.util.as_completed([square.remote(i) for i in range(n)]))

    print(sorted(ray.util.map_unordered(square, range(5), chunk_size=2)))
    print(ray.get(sum_of_squares.remote(4)))
    ray.shutdown()
    """
)


def run_program(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("QUANTA_")}
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_ray_program_uses_the_plugin_in_driver_and_workers() -> None:
    proc = run_program(RAY_PROGRAM, QUANTA_PLUGINS="example")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["[0, 1, 4, 9, 16]", "14"]


def test_a_blocked_plugin_is_not_loaded_in_a_fresh_process() -> None:
    code = (
        "import sys, quanta.util; print(hasattr(quanta.util, 'as_completed'), "
        "'quanta_plugin_example' in sys.modules)"
    )
    proc = run_program(code, QUANTA_BLOCK_PLUGINS="example")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False False"
