"""Seed 003 "Waiting for Partial Results" with ``ray.wait``.

Shrunk: ``slow_function`` (the seed's earlier remote function) sleeps 0.2 s instead of 10 s;
the second task sleeps a little longer so that exactly one is ready when ``wait`` returns.
"""

import time

import quanta as ray

ray.init(num_cpus=2)

delays = iter([0.2, 5.0])  # added: the first task finishes first


@ray.remote
def slow_function(delay):  # seed: slow_function() with time.sleep(10)
    time.sleep(delay)
    return 1


object_refs = [slow_function.remote(next(delays)) for _ in range(2)]
# Return as soon as one of the tasks finished execution.
start = time.monotonic()  # added
ready_refs, remaining_refs = ray.wait(object_refs, num_returns=1, timeout=None)

elapsed = time.monotonic() - start  # added
assert ready_refs == object_refs[:1] and remaining_refs == object_refs[1:], (ready_refs,
                                                                               remaining_refs)
assert elapsed < 4.0, elapsed  # well before the 5 s task
assert ray.get(ready_refs) == [1]
print(f"ready: {len(ready_refs)}, remaining: {len(remaining_refs)}")
