"""Seed 001 "Antipattern: Processing results in submission order using ray.get" -- antipattern
and the ``ray.wait`` fix.

Changed: the seed's ``f()`` takes no argument but is called as ``f.remote(i)``; here it takes
``i`` and returns it. Shrunk: ``time.sleep(random.random())`` -> ``random.random() / 20``.
"""

import random
import time

import quanta as ray

ray.init(num_cpus=2)  # added: the seed does not init

@ray.remote
def f(i):                                # seed: def f():
    time.sleep(random.random() / 20)     # shrunk from random.random()
    return i                             # added

# Antipattern: process results in the order they were spawned.

processed = []  # added
refs = [f.remote(i) for i in range(100)]
for ref in refs:
    # Blocks until this ObjectRef is ready.
    result = ray.get(ref)
    # process result
    processed.append(result)  # added
assert processed == list(range(100))  # added

# Better approach: process results in the order that they finish.
processed = []  # added
refs = [f.remote(i) for i in range(100)]
unfinished = refs
while unfinished:
    # Returns the first ObjectRef that is ready.
    finished, unfinished = ray.wait(unfinished, num_returns=1)
    result = ray.get(finished)
    # process result
    assert len(finished) == 1 and len(result) == 1  # added
    processed.extend(result)  # added

assert sorted(processed) == list(range(100))  # added
print("processed", len(processed), "results in completion order")
