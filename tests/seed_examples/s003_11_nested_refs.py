"""Seed 003 "Anti-pattern: Calling ray.get() on Task Arguments" and its solution.

``f`` is assumed by the seed and defined here; the seed never calls the antipattern's
``pass_via_nested_ref``, so it is called here with a list of refs (refs nested in a list arrive
as refs). Each task prints the sum (3) from its worker; the prints reach the driver's output.
"""

import quanta as ray

ray.init(num_cpus=2)


@ray.remote
def f():  # assumed by the seed
    return 1


@ray.remote
def pass_via_nested_ref(refs):
    print(sum(ray.get(refs))) # Blocks inside task

ray.get(pass_via_nested_ref.remote([f.remote() for _ in range(3)]))  # added call


@ray.remote
def pass_via_direct_arg(*args):
    print(sum(args)) # Ray dereferences automatically
ray.get(pass_via_direct_arg.remote(*[f.remote() for _ in range(3)]))
print("done")
