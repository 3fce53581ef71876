"""Seed 004 "Tasks" (key concepts; the seed has prose, no code): a function annotated with
``@ray.remote``; ``.remote()`` submits it asynchronously and returns an ObjectRef that resolves
to the function's return value; invocations run in worker processes, not the driver."""

import os

import quanta as ray

ray.init(num_cpus=2)


@ray.remote
def square(x):
    return x * x, os.getpid()


ref = square.remote(7)
assert isinstance(ref, ray.ObjectRef)
value, pid = ray.get(ref)
assert value == 49 and pid != os.getpid()
refs = [square.remote(i) for i in range(10)]
assert [v for v, _ in ray.get(refs)] == [i * i for i in range(10)]
print("square(7) =", value)
