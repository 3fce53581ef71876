"""Seed 004 "Namespaces": ``ray.init(namespace="serving")`` (named actors, the point of
namespaces, are covered by the actors issue; here the namespace is set and tasks run)."""

import quanta as ray

ray.init(namespace="serving")

assert ray.get_runtime_context().namespace == "serving"


@ray.remote
def ping():
    return "pong"


assert ray.get(ping.remote()) == "pong"
print("namespace:", ray.get_runtime_context().namespace)
