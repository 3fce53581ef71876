"""Seed 001 "Antipattern: Accessing Global Variable in Tasks/Actors" -- the antipattern (actor
``A`` reads a module global that the driver changes afterwards) and the better approach (a
``GlobalVarActor`` holds the value; ``A`` gets its handle as a constructor argument).

The seed's code is verbatim (its two ``A`` classes are defined one after the other, as on the
page), with ``ray.init`` and checks added. The antipattern prints 6: the actor's class was sent
to its worker with ``global_v == 3``, and the driver's later ``global_v = 4`` is not seen there.
"""

import quanta as ray

ray.init(num_cpus=2)  # added: the seed does not init

# Antipattern:

global_v = 3

@ray.remote
class A:
    def f(self):
        return global_v + 3

actor = A.remote()
global_v = 4
# This prints 6, not 7. It is because the value change of global_v inside a driver is not
# reflected to the actor because they are running in different processes.
print(ray.get(actor.f.remote()))
assert ray.get(actor.f.remote()) == 6  # added

# Better approach:

@ray.remote
class GlobalVarActor:
    def __init__(self):
        self.global_v = 3
    def set_global_v(self, v):
        self.global_v = v
    def get_global_v(self):
        return self.global_v

@ray.remote
class A:  # the seed defines A again for the better approach
    def __init__(self, global_v_registry):
        self.global_v_registry = global_v_registry
    def f(self):
        return ray.get(self.global_v_registry.get_global_v.remote()) + 3

global_v_registry = GlobalVarActor.remote()
actor = A.remote(global_v_registry)
ray.get(global_v_registry.set_global_v.remote(4))
# This will print 7 correctly.
print(ray.get(actor.f.remote()))
assert ray.get(actor.f.remote()) == 7  # added
print("antipattern: 6, registry actor: 7")  # added

ray.shutdown()
