"""Seed 003 "Specifying Resource Requirements".

Adapted: the node has 2 CPUs and no GPU, so the seed's ``num_cpus=4, num_gpus=2`` function and
its ``.options(num_cpus=3)`` override can never run: ``ray.get`` must raise
TaskUnschedulableError promptly (not hang). ``.options(num_cpus=1)`` alone still asks for the
decorator's 2 GPUs, so it is unschedulable too; ``.options(num_cpus=1, num_gpus=0)`` runs.
"""

import time

import quanta as ray

ray.init(num_cpus=2)


# Specify required resources.
@ray.remote(num_cpus=4, num_gpus=2)
def my_function():
    return 1


def expect_unschedulable(ref, what):  # added
    start = time.monotonic()
    try:
        ray.get(ref, timeout=30)
    except ray.exceptions.TaskUnschedulableError:
        elapsed = time.monotonic() - start
        assert elapsed < 5, f"{what}: TaskUnschedulableError took {elapsed:.1f} s"
        print(f"{what}: TaskUnschedulableError")
    else:
        raise AssertionError(f"{what}: ran on a node without the resources")


expect_unschedulable(my_function.remote(), "num_cpus=4, num_gpus=2")

# Override the default resource requirements.
ref = my_function.options(num_cpus=3).remote()
expect_unschedulable(ref, "options(num_cpus=3)")

expect_unschedulable(my_function.options(num_cpus=1).remote(), "options(num_cpus=1)")
assert ray.get(my_function.options(num_cpus=1, num_gpus=0).remote()) == 1
print("options(num_cpus=1, num_gpus=0): 1")
