"""Seed 001 "Pattern: Fault Tolerance with Actor Checkpointing", second example: the same
result "just using regular Ray actors and some custom logic" -- a driver-side ``Controller``
snapshots its ``Worker`` actors' states, runs a task on all of them, and when a worker dies
(``RayActorError``) creates new workers, loads the snapshot into them and tries again.

The seed's code is a sketch; filled in so that it runs, keeping its structure and names:

* the methods get their missing ``self``; ``Controller.__init__`` is added (it stores
  ``num_workers``, since the retry calls ``self.create_workers()`` without it, and creates the
  workers); ``Worker.remote(...)`` -> ``Worker.remote()``; the seed's broken indentation of
  ``perform_task_with_fault_tol`` is restored (the ``if success`` is inside the retry loop);
  ``RayActorError`` is imported from ``quanta.exceptions``;
* ``perform_task`` ("This task might fail") counts the tasks done in the worker's state and
  returns the count; while a "fail" file exists, the first worker to remove it dies
  (``os._exit(1)``), so exactly one worker crashes during the second round of tasks.

Checked: three rounds on three workers return [1, 1, 1], [2, 2, 2], [3, 3, 3]. The second
round needed a retry: the workers were recreated and their states (1 task done each) restored
from the snapshot, so the partial work of the failed attempt was discarded.
"""

import os
import shutil
import tempfile

import quanta as ray
from quanta.exceptions import RayActorError  # seed: RayActorError (import not shown)

ray.init(num_cpus=2)  # added: the seed does not init

FAIL_DIR = tempfile.mkdtemp()                   # added
FAIL_FILE = os.path.join(FAIL_DIR, "fail")      # added: makes one worker crash once


@ray.remote
class Worker:
    def __init__(self, *args, **kwargs):
        self.state = {}

    def perform_task(self, *args, **kwargs):
        # This task might fail.
        try:                                    # added
            os.remove(FAIL_FILE)
        except FileNotFoundError:
            pass
        else:
            os._exit(1)
        self.state["tasks_done"] = self.state.get("tasks_done", 0) + 1
        return self.state["tasks_done"]

    def get_state(self):
        # Returns actor state.
        return self.state

    def load_state(self, state):
        # Loads actor state.
        self.state = state


class Controller:
    def __init__(self, num_workers):  # added
        self.num_workers = num_workers
        self.attempts = 0
        self.create_workers()

    def create_workers(self, num_workers=None):  # seed: create_workers(num_workers)
        num_workers = num_workers or self.num_workers  # added
        self.workers = [Worker.remote() for _ in range(num_workers)]

    def perform_task_with_fault_tol(self, max_retries, *args, **kwargs):
        # Perform tasks in a fault tolerant manner.
        for _ in range(max_retries):
            self.attempts += 1  # added
            worker_states = ray.get(
                [w.get_state.remote() for w in self.workers])
            success, result = self.perform_task_on_all_workers(
                *args, **kwargs)
            if success:
                return result
            else:
                self.create_workers()
                ray.get(
                    [w.load_state.remote(state)
                     for w, state in zip(
                         self.workers, worker_states)])
        return None

    def perform_task_on_all_workers(self, *args, **kwargs):
        futures = [
            w.perform_task.remote(
                *args, **kwargs) for w in self.workers]
        output = []
        unfinished = futures
        try:
            while len(unfinished) > 0:
                finished, unfinished = ray.wait(unfinished)
                output.extend(ray.get(finished))
        except RayActorError:
            return False, None

        return True, output


controller = Controller(3)
rounds = []
for round_number in range(3):
    if round_number == 1:
        open(FAIL_FILE, "w").close()  # one worker dies during the second round
    rounds.append(sorted(controller.perform_task_with_fault_tol(3)))

assert rounds == [[1, 1, 1], [2, 2, 2], [3, 3, 3]], rounds
assert controller.attempts == 4, controller.attempts  # the second round was tried twice
assert not os.path.exists(FAIL_FILE)
print("rounds:", rounds)
print("one worker died; recreated workers resumed from the saved states")

shutil.rmtree(FAIL_DIR)
ray.shutdown()
