"""Seed 003 "Passing Object References to Tasks". ``my_function`` is the seed's earlier
remote function that returns 1."""

import quanta as ray

ray.init(num_cpus=2)


@ray.remote
def my_function():  # from the seed's first example
    return 1


@ray.remote
def function_with_an_argument(value):
    return value + 1
obj_ref1 = my_function.remote()
assert ray.get(obj_ref1) == 1
# You can pass an object ref as an argument to another Ray task.
obj_ref2 = function_with_an_argument.remote(obj_ref1)
assert ray.get(obj_ref2) == 2
print("obj_ref2:", ray.get(obj_ref2))
