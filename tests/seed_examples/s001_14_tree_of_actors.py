"""Seed 001 "Pattern: Tree of Actors" (a ``Supervisor`` actor that creates and drives three
``Worker`` actors).

Changed: the seed's ``ray.init()`` -> ``ray.init(num_cpus=4)``. Each actor asks for
``num_cpus=1`` and holds it while it lives, so the tree needs 4 CPUs; on a 2-CPU machine two
workers could never start and ``sup.work`` would wait for ever (CPUs are logical resources, so
declaring 4 is fine). The seed's code is otherwise verbatim.

Added: a check of the seed's note "if the supervisor dies, the worker actors are automatically
terminated thanks to actor reference counting": after ``del sup`` the supervisor and its three
workers die, so their 4 CPUs come back.
"""

import time

import quanta as ray


@ray.remote(num_cpus=1)
class Worker:
    def work(self):
        return "done"

@ray.remote(num_cpus=1)
class Supervisor:
    def __init__(self):
        self.workers = [Worker.remote() for _ in range(3)]
    def work(self):
        return ray.get([w.work.remote() for w in self.workers])

ray.init(num_cpus=4)  # seed: ray.init()
sup = Supervisor.remote()
print(ray.get(sup.work.remote())) # outputs ['done', 'done', 'done']

# added: the supervisor and its workers hold 1 CPU each
assert ray.available_resources().get("CPU", 0) == 0, ray.available_resources()

# added: dropping the only handle to the supervisor terminates it and, with it, its workers
del sup
deadline = time.monotonic() + 10
while ray.available_resources().get("CPU", 0) < 4:
    assert time.monotonic() < deadline, (
        f"actors not terminated after del sup: {ray.available_resources()}")
    time.sleep(0.05)
print("supervisor and workers terminated after del sup")

ray.shutdown()
