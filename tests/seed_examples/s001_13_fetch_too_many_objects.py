"""Seed 001 "Antipattern: Fetching too many results at once with ray.get" -- antipattern and the
batched fix.

Shrunk: objects of np.zeros(1024*1024*10) (80 MB) -> np.zeros(1024*20) (160 KB, still stored in
shared memory); 1_000_000 objects in chunks of 1_000 -> 1_000 objects in chunks of 100.
Changed: the seed's antipattern calls ``range(1e6)``, a TypeError in Python 3; here range(1_000).
``write_to_file`` is assumed by the seed and defined here.
"""

import os
import tempfile

import numpy as np
import quanta as ray

ray.init(num_cpus=2)

out_path = os.path.join(tempfile.mkdtemp(), "results.txt")
written = []


def write_to_file(results):  # assumed by the seed
    written.append(len(results))
    with open(out_path, "a") as fh:
        fh.write(f"{len(results)} {sum(float(r.sum()) for r in results)}\n")


# Antipattern:
@ray.remote
def return_big_object():
    return np.zeros(1024*20)  # shrunk from 1024*1024*10

object_refs = [return_big_object.remote() for _ in range(1_000)]  # seed: range(1e6)
# Calling ray.get will cause object store to OOM!
results = ray.get(object_refs)
write_to_file(results)
assert written == [1_000]  # added
del results, object_refs  # added

# Better approach:
written.clear()

object_refs = [return_big_object.remote() for _ in range(1_000)]  # seed: range(1_000_000)
for i in range(10):  # noqa: B007  seed: range(1_000)
    chunk = object_refs[:100]         # seed: [:1_000]
    object_refs = object_refs[100:]   # seed: [1_000:]
    results = ray.get(chunk)
    write_to_file(results)

assert written == [100] * 10 and object_refs == []  # added
print("wrote", sum(written), "results in", len(written), "chunks")
