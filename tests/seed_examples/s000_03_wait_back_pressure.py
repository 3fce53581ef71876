"""Seed 000 "Limit pending tasks with ray.wait".

``stream`` and ``process`` are assumed by the seed and defined here; the loop is verbatim,
with a check of the number of pending tasks added.
"""

import time

import quanta as ray

ray.init(num_cpus=2)

stream = range(1000)  # assumed by the seed


@ray.remote
def process(item):
    time.sleep(0.0005)
    return item * 2


max_pending = 0  # added: check the gate
pending = []
for item in stream:
    if len(pending) >= 100:
        done, pending = ray.wait(pending, num_returns=10)
        assert len(done) == 10  # added
    pending.append(process.remote(item))
    max_pending = max(max_pending, len(pending))  # added
ray.get(pending)

results = ray.get(pending)
assert max_pending <= 100, max_pending
assert all(r % 2 == 0 for r in results) and len(results) <= 100
print(f"max pending: {max_pending}; last batch: {len(results)} results")
