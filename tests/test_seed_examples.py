"""The code examples of the user's seed documents (/work/shared/seeds/): tasks, objects, actors.

Each example is a script under ``tests/seed_examples/`` that starts with ``import quanta as
ray`` and keeps the seed's code as close to verbatim as it can run (what was shrunk, filled in
or changed is said in the script's docstring and comments). Each runs in its own interpreter
(``python path``), so it starts and stops its own Quanta node as a user's script would. A test
checks the exit code, the key lines of the output, the run time where the example is about
time, and that the script left no /dev/shm/quanta-* store (nor session directory, nor process)
behind.

Script names: ``s<seed>_<nn>_<topic>.py``, seeds 000 (production patterns), 001 (design-patterns
handbook), 003 (tasks guide) and 004 (key concepts). Seed 002 is a table of contents: no code.

Not here:

* 000 "Pool of actors for parallel inference" and 001 "More patterns" / "Using queues and actor
  pools" (``ray.util.ActorPool``, ``ray.util.queue.Queue``): a separate issue (the
  quanta-util-pool and quanta-util-queue plugins).
* Prose only, no code: 000 "Use placement groups for gang scheduling", "Handling dependencies"
  (runtime environments), "Don't ray.get inside tasks", "Avoid global state"; 001 "Antipattern:
  Unnecessary stateful workers" and the "More patterns" list (actor handles, placement groups,
  AsyncIO routers, named/detached actors, ...); 004 "Actors", "Placement groups",
  "Environment dependencies", "Fault tolerance".
"""

from __future__ import annotations

import glob
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES_DIR = os.path.join(HERE, "seed_examples")
EXAMPLES = sorted(glob.glob(os.path.join(EXAMPLES_DIR, "s*.py")))

# Per example: lines that must appear in its output (stdout + stderr, each an exact line), and
# optionally "max_seconds" (the script's whole run, start-up and shutdown included).
EXPECTED: dict[str, dict] = {
    "s000_01_pipeline_of_refs": {"lines": ["pipeline scores: [24, 24, 24]"]},
    "s000_02_put_fan_out": {"lines": ["fan-out results: 1000 [0.0, 2.0, 4.0]"]},
    "s000_03_wait_back_pressure": {"lines": ["max pending: 100; last batch: 100 results"]},
    "s000_04_batch_small_tasks": {"lines": ["batches: 8 items: 1000"]},
    "s000_05_warm_model_actor": {"lines": [
        "predictions: [12, 44, 76]",
        "model calls: 10",
        "predictor gpu ids: [0]",
        "second Predictor ran after the first was killed"]},
    "s001_01_tree_of_tasks_quick_sort": {
        "lines": ["sorted 1000000 numbers"],
        "patterns": ["Sequential execution: ", "Distributed execution: "]},
    "s001_02_map": {"lines": ["parallel map: [0, 2, 4, 6, 8]"]},
    "s001_03_reduce": {"lines": ["simple reduce: 9900", "tree reduce: 9900"]},
    "s001_04_wait_limit_in_flight_tasks": {"lines": ["with backpressure: 300 results"]},
    "s001_05_too_fine_grained_tasks": {"lines": ["batched: 100 tasks, 10000 numbers"]},
    "s001_06_unnecessary_get": {"lines": ["reduced: 1000000.0"]},
    "s001_07_closure_capture_antipattern": {"lines": ["len: 1048576"]},
    "s001_08_closure_capture_put": {"lines": ["len: 1048576"]},
    "s001_09_closure_capture_lambda": {"lines": ["len: 1048576"]},
    "s001_10_get_in_loop": {"lines": ["returns: [0, 1, 2, 3, 4]"]},
    "s001_11_redefine_task_in_loop": {
        "lines": ["outputs[2]: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]"]},
    "s001_12_submission_order": {"lines": ["processed 100 results in completion order"]},
    "s001_13_fetch_too_many_objects": {"lines": ["wrote 1000 results in 10 chunks"]},
    "s001_14_tree_of_actors": {"lines": [
        "['done', 'done', 'done']",
        "supervisor and workers terminated after del sup"]},
    "s001_15_wait_limit_in_flight_actor_calls": {
        "lines": ["actor with backpressure: 300 calls in order"]},
    # the antipattern prints 6 (the actor does not see the driver's new global), the fix 7
    "s001_16_global_variable_actor": {"lines": ["6", "7", "antipattern: 6, registry actor: 7"]},
    # the script itself checks that the overlapping version is faster (about 1.0 s vs 2.0 s)
    "s001_17_overlap_compute_communication": {
        "lines": ["processed 20 items; overlapping was faster"], "patterns": ["bad: "]},
    "s001_18_immortal_actor_checkpoint": {"lines": [
        "ImmortalActor counts: [1, 2, 3, 4, 5]",
        "restarted once, state restored from the checkpoint"]},
    "s001_19_controller_restores_workers": {"lines": [
        "rounds: [[1, 1, 1], [2, 2, 2], [3, 3, 3]]",
        "one worker died; recreated workers resumed from the saved states"]},
    "s001_20_async_actor_long_polling": {"lines": [
        "LongPollingActor: other_task blocked by run",
        "LongPollingActor: run ended by ray.kill",
        "LongPollingActorAsync: other_task ran while run was polling",
        "LongPollingActorAsync: run kept polling",
        "LongPollingActorAsync: run ended by ray.kill"]},
    # four 10 s tasks are still running when the script ends: exiting must not wait for them
    "s003_01_remote_functions": {"lines": ["submitted 4 slow tasks"], "max_seconds": 8},
    "s003_02_resources": {"lines": [
        "num_cpus=4, num_gpus=2: TaskUnschedulableError",
        "options(num_cpus=3): TaskUnschedulableError",
        "options(num_cpus=1): TaskUnschedulableError",
        "options(num_cpus=1, num_gpus=0): 1"], "max_seconds": 20},
    "s003_03_passing_object_refs": {"lines": ["obj_ref2: 2"]},
    "s003_04_wait": {"lines": ["ready: 1, remaining: 1"]},
    "s003_05_multiple_returns": {"lines": ["num_returns=3: [0, 1, 2]"]},
    "s003_06_generators": {"lines": ["0", "1", "2", "3", "4"]},
    # the task sleeps 10e6 s: only a working cancel lets the script end
    "s003_07_cancel": {"lines": ["Object reference was cancelled."], "max_seconds": 15},
    "s003_08_nested_tasks_quick_sort": {"patterns": ["sorted 1000000 numbers in "]},
    "s003_09_get_in_loop": {"lines": ["parallel_returns: [0, 1, 4, 9, 16]"]},
    "s003_10_unnecessary_get": {"lines": ["reduced: 1000000.0"]},
    # both tasks print 3 in their workers; the prints reach the driver's output
    "s003_11_nested_refs": {"lines": ["3", "done"], "count": {"3": 2}},
    "s003_12_submission_order": {"lines": ["processed 100 results in completion order"]},
    "s003_13_too_many_objects": {"lines": ["processed 1000 objects in 10 batches"]},
    "s003_14_fine_grained_tasks": {"lines": ["batched: 10 tasks, 10000 numbers"]},
    "s003_15_retries": {"lines": ["my_task succeeded after 2 retries",
                                  "KeyError was not retried"]},
    "s003_16_task_events": {"lines": ["my_task: ran"]},
    # the estimate from 2,000,000 samples: 3.14 +- 0.004 (8 standard deviations), checked inside
    "s003_17_monte_carlo_pi": {
        "lines": ["Progress: 100%"], "patterns": ["Estimated value of π is: 3.1"],
        "count": {"Progress: 100%": 1}},
    "s004_01_tasks": {"lines": ["square(7) = 49"]},
    "s004_02_objects": {"lines": ["objects ok: 999999"]},
    "s004_03_namespace": {"lines": ["namespace: serving"]},
    "s004_04_resource_model": {"lines": ["custom resource serialized the tasks"]},
    "s004_05_named_actors_namespaces": {"lines": [
        "serving/model: v1 (driver and task)",
        "staging/model: v2; serving/model still v1",
        "other/model: ValueError",
        "serving/missing: ValueError",
        "second serving/model: ValueError"]},
    # three drivers on one node started by `quanta start --head` (and stopped by `quanta stop`)
    "s004_06_namespaces_two_drivers": {"lines": [
        "job 1 (serving): created model v1",
        "job 2 (serving): found model v1",
        "job 3 (staging): no actor named model",
        "job 3 (staging): created detached model v2",
        "job 1 (serving): model v1; staging's detached model v2 outlived job 3",
        "quanta stop: ok"]},
}


def _name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def test_every_example_has_expectations():
    names = {_name(p) for p in EXAMPLES}
    assert names, f"no examples found in {EXAMPLES_DIR}"
    assert names == set(EXPECTED), (
        f"without expectations: {sorted(names - set(EXPECTED))}; "
        f"expectations without a script: {sorted(set(EXPECTED) - names)}")


@pytest.mark.parametrize("path", EXAMPLES, ids=_name)
def test_seed_example(path, script_runner):
    expected = EXPECTED.get(_name(path), {})
    run = script_runner(path, timeout=60)

    assert not run.timed_out, f"timed out after 60 s\n{run.describe()}"
    assert run.returncode == 0, run.describe()
    assert run.sessions, f"the script started no Quanta node\n{run.describe()}"
    assert not run.leftovers, "; ".join(run.leftovers) + "\n" + run.describe()

    lines = [line.rstrip() for line in run.output.splitlines()]
    for want in expected.get("lines", []):
        assert want in lines, f"missing output line {want!r}\n{run.describe()}"
    for prefix in expected.get("patterns", []):
        assert any(line.startswith(prefix) for line in lines), (
            f"no output line starts with {prefix!r}\n{run.describe()}")
    for want, n in expected.get("count", {}).items():
        assert lines.count(want) == n, (
            f"expected {n} output lines {want!r}, got {lines.count(want)}\n{run.describe()}")
    if "max_seconds" in expected:
        assert run.seconds < expected["max_seconds"], (
            f"took {run.seconds:.1f} s (limit {expected['max_seconds']} s)\n{run.describe()}")

    # generator outputs stream in order: 0..4 printed one per line, before the summary
    if _name(path) == "s003_06_generators":
        values = [line for line in lines if line in {"0", "1", "2", "3", "4"}]
        assert values == ["0", "1", "2", "3", "4"], run.describe()
