"""Seed 001 "Pattern: Concurrent operations with async actor" -- a long-polling actor whose
``run`` loops for ever: as a regular actor it can run no other call (``other_task`` never
runs); as an async actor (``async def`` methods) ``other_task`` runs while ``run`` awaits.

Filled in: the data store (a ``DataStore`` actor whose ``fetch`` takes 20 ms, standing for a
long poll), ``_process`` counts the items (and an added ``processed`` method returns the
count). Fixed in the seed: ``@ray.remote`` is missing on both classes; the async ``run`` uses
``data_store_actor`` where it means ``self.data_store_actor``; the async ``_process(self)``
is called with ``data``; ``LongPollingActorAsync.remote()`` is missing its
``data_store_actor`` argument; the seed's ``long_polling_actor.remote()`` is
``LongPollingActor.remote(data_store)``.

The seed says the blocked ``other_task`` "won't be processed forever": here it is checked to be
still pending after 1 s. Both ``run`` loops never end, so the script ends them with
``ray.kill``; the ``run`` calls then fail with ``RayActorError``.
"""

import time

import quanta as ray

ray.init(num_cpus=2)  # added: the seed does not init


@ray.remote
class DataStore:  # assumed by the seed
    def __init__(self):
        self.next_item = 0

    def fetch(self):
        time.sleep(0.02)
        self.next_item += 1
        return self.next_item


data_store = DataStore.remote()


@ray.remote  # missing in the seed
class LongPollingActor:
    def __init__(self, data_store_actor):
        self.data_store_actor = data_store_actor

    def run(self):
        while True:
            data = ray.get(self.data_store_actor.fetch.remote())
            self._process(data)

    def other_task(self):
        return True

    def _process(self, data):
        # Do process here...
        pass


l = LongPollingActor.remote(data_store)  # noqa: E741  (the seed's name)
# Actor runs a while loop
sync_run = l.run.remote()  # seed: result not kept
# This won't be processed forever because the actor thread is occupied by the run method.
other = l.other_task.remote()  # seed: ray.get(l.other_task.remote()), which never returns
ready, _ = ray.wait([other], timeout=1)
assert not ready, "other_task ran while the regular actor's run loop was running"
print("LongPollingActor: other_task blocked by run")
ray.kill(l)
try:
    ray.get(sync_run, timeout=30)
except ray.exceptions.RayActorError:
    print("LongPollingActor: run ended by ray.kill")


@ray.remote  # missing in the seed
class LongPollingActorAsync:
    def __init__(self, data_store_actor):
        self.data_store_actor = data_store_actor
        self.num_processed = 0  # added

    async def run(self):
        while True:
            # Coroutine will switch context when "await" is called.
            data = await self.data_store_actor.fetch.remote()  # seed: data_store_actor
            self._process(data)

    def _process(self, data):  # seed: _process(self)
        self.num_processed += 1  # seed: pass

    async def other_task(self):
        return True

    async def processed(self):  # added
        return self.num_processed


l = LongPollingActorAsync.remote(data_store)  # noqa: E741  (seed: no argument)
async_run = l.run.remote()  # seed: result not kept
assert ray.get(l.other_task.remote(), timeout=10) is True
print("LongPollingActorAsync: other_task ran while run was polling")

# added: run really is polling meanwhile
first = ray.get(l.processed.remote(), timeout=10)
time.sleep(0.3)
later = ray.get(l.processed.remote(), timeout=10)
assert later > first, (first, later)
print("LongPollingActorAsync: run kept polling")
ray.kill(l)
try:
    ray.get(async_run, timeout=30)
except ray.exceptions.RayActorError:
    print("LongPollingActorAsync: run ended by ray.kill")

ray.shutdown()
