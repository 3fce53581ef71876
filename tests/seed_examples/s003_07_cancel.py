"""Seed 003 "Cancelling Tasks" with ``ray.cancel``. The seed's 10e6-second sleep is kept: the
cancel has to interrupt it. ``import time`` is missing in the seed; added."""

import time

import quanta as ray

ray.init(num_cpus=2)  # added: the seed does not init

@ray.remote
def blocking_operation():
    time.sleep(10e6)
obj_ref = blocking_operation.remote()
ray.cancel(obj_ref)
try:
    ray.get(obj_ref)
except ray.exceptions.TaskCancelledError:
    print("Object reference was cancelled.")
