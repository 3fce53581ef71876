"""Seed 004 "Namespaces", named-actor part: "A namespace is a logical grouping of jobs and named
actors. Two jobs in the same namespace can discover each other's named actors; jobs in different
namespaces cannot." The seed's only code is ``ray.init(namespace="serving")`` (kept; the
namespace alone is ``s004_03_namespace.py``).

One driver: the other namespace is reached the way Ray lets one job do it,
``.options(name=..., namespace=...)`` and ``ray.get_actor(name, namespace=...)``. Several
drivers sharing a node started by ``quanta start --head`` are
``s004_06_namespaces_two_drivers.py``. ``Model`` is added (the seed defines no actor).

Checked: a named actor is found by name in its namespace, by this driver and by a task (tasks
run in their job's namespace); the same name can be used again in another namespace and each
lookup finds its own; a name unknown in a namespace, or already taken there, raises ValueError.
"""

import quanta as ray

ray.init(namespace="serving")


@ray.remote
class Model:  # added
    def __init__(self, version):
        self.version = version

    def get_version(self):
        return self.version


@ray.remote
def lookup(name):  # added: a task of this job looks the actor up by name
    return ray.get(ray.get_actor(name).get_version.remote())


model = Model.options(name="model").remote("v1")  # in this job's namespace, "serving"
assert ray.get_runtime_context().namespace == "serving"
assert ray.get(ray.get_actor("model").get_version.remote()) == "v1"
assert ray.get(ray.get_actor("model", namespace="serving").get_version.remote()) == "v1"
assert ray.get(lookup.remote("model")) == "v1"
print("serving/model: v1 (driver and task)")

# the same name in another namespace is another actor
staging_model = Model.options(name="model", namespace="staging").remote("v2")
assert ray.get(ray.get_actor("model", namespace="staging").get_version.remote()) == "v2"
assert ray.get(ray.get_actor("model").get_version.remote()) == "v1"
print("staging/model: v2; serving/model still v1")

# a job in another namespace does not see this one's named actors
try:
    ray.get_actor("model", namespace="other")
except ValueError:
    print("other/model: ValueError")
else:
    raise AssertionError("found a named actor in a namespace where none was created")

try:
    ray.get_actor("missing")
except ValueError:
    print("serving/missing: ValueError")
else:
    raise AssertionError("found an actor that was never created")

# a name is unique within its namespace
try:
    Model.options(name="model").remote("v3")
except ValueError:
    print("second serving/model: ValueError")
else:
    raise AssertionError("two actors named 'model' in namespace 'serving'")

ray.shutdown()
