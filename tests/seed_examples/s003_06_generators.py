"""Seed 003 "Generators": a generator task streams its outputs before it finishes.

Shrunk: each step sleeps SLEEP = 0.2 s instead of 5 s. A check is added that the first value
arrives long before the task finishes.
"""

import time

import quanta as ray

ray.init(num_cpus=2)  # added: the seed does not init

SLEEP = 0.2  # seed: 5


@ray.remote
def task():
    for i in range(5):
        time.sleep(SLEEP)
        yield i

# The generator yields output every 5 seconds
start = time.monotonic()  # added
arrivals = []  # added
for obj_ref in task.remote():
    print(ray.get(obj_ref))
    arrivals.append((ray.get(obj_ref), time.monotonic() - start))  # added

assert [v for v, _ in arrivals] == [0, 1, 2, 3, 4], arrivals
# streamed: the first value arrived at least four sleeps before the last one, i.e. long
# before the task finished (a task returning all values at once would give them together)
assert arrivals[-1][1] - arrivals[0][1] >= 4 * SLEEP * 0.9, arrivals
print("arrivals:", [round(t, 2) for _, t in arrivals])
