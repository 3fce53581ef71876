"""Seed 004 "Objects" (key concepts; prose only): the object store holds task results and
values placed with ``ray.put``; workers on the same node read shared memory zero-copy (numpy
arrays come back read-only, as in Ray)."""

import numpy as np
import quanta as ray

ray.init(num_cpus=2)

array = np.arange(1_000_000, dtype=np.int64)
ref = ray.put(array)
assert isinstance(ref, ray.ObjectRef)
value = ray.get(ref)
assert np.array_equal(value, array)
assert not value.flags.writeable  # a zero-copy view of shared memory


@ray.remote
def total(a):
    return int(a.sum()), bool(a.flags.writeable)


assert ray.get(total.remote(ref)) == (int(array.sum()), False)


@ray.remote
def make():
    return np.ones(500_000)


assert float(ray.get(make.remote()).sum()) == 500_000.0  # a task result, from the store
print("objects ok:", int(value[-1]))
