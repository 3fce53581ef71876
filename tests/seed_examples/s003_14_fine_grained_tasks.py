"""Seed 003 "Anti-pattern: Over-parallelizing with Too Fine-grained Tasks" and the batching
solution. ``numbers`` is assumed by the seed's solution and defined here."""

import quanta as ray

ray.init(num_cpus=2)


@ray.remote
def remote_double(number):
    return number * 2
# Overhead dominates - slower than sequential
doubled_number_refs = [remote_double.remote(number) for number in range(10000)]
assert ray.get(doubled_number_refs) == [2 * n for n in range(10000)]  # added

numbers = list(range(10000))  # assumed by the seed


@ray.remote
def remote_double_batch(numbers):
    return [number * 2 for number in numbers]
BATCH_SIZE = 1000
doubled_batch_refs = []
for i in range(0, len(numbers), BATCH_SIZE):
    batch = numbers[i : i + BATCH_SIZE]
    doubled_batch_refs.append(remote_double_batch.remote(batch))

doubled = [x for batch in ray.get(doubled_batch_refs) for x in batch]  # added
assert len(doubled_batch_refs) == 10 and doubled == [2 * n for n in numbers]
print("batched:", len(doubled_batch_refs), "tasks,", len(doubled), "numbers")
