"""Seed 001 "Pattern: Overlapping computation and communication" -- a ``Worker`` actor pulls
work items off a work-queue actor; the "bad" version waits for each item before asking for the
next, the "good" one asks for the next item before processing the current one.

Filled in (assumed by the seed): the work queue (a ``WorkQueue`` actor whose
``get_work_item`` takes 50 ms, standing for the RPC's latency) and ``Worker.process`` (50 ms of
"compute"). Changed: the seed's ``while True`` loops never end; here ``get_work_item`` returns
``None`` when the queue is empty, ``run`` then returns the processed items (the two added
lines are marked). The two ``Worker`` classes keep the seed's shared name and are run one after
the other. Added: a ``ready`` method on the actors, so that the timing starts once they exist.
Shrunk: 20 work items.

Checked: both versions process every item in order, and the good version, whose next fetch
overlaps the current item's processing, takes clearly less time (about 1.0 s vs 2.0 s).
"""

import time

import quanta as ray

ray.init(num_cpus=2)  # added: the seed does not init

NUM_ITEMS = 20
LATENCY = 0.05   # seconds per get_work_item (the communication)
COMPUTE = 0.05   # seconds per process (the computation)


@ray.remote
class WorkQueue:  # assumed by the seed
    def __init__(self, items):
        self.items = list(items)

    def get_work_item(self):
        time.sleep(LATENCY)
        return self.items.pop(0) if self.items else None

    def ready(self):  # added
        return True


# Bad: No overlapping of computation with communication.
@ray.remote
class Worker:
    def __init__(self, work_queue):
        self.work_queue = work_queue
        self.processed = []  # added

    def process(self, work_item):  # assumed by the seed
        time.sleep(COMPUTE)
        self.processed.append(work_item)

    def ready(self):  # added
        return True

    def run(self):
        while True:
            # Get work from the queue.
            work_item = ray.get(self.work_queue.get_work_item.remote())
            if work_item is None:  # added: the queue is empty
                return self.processed  # added

            # Do work.
            self.process(work_item)

work_queue = WorkQueue.remote(range(NUM_ITEMS))  # added
worker = Worker.remote(work_queue)  # added
ray.get([work_queue.ready.remote(), worker.ready.remote()])  # added: time the run only
start = time.monotonic()
bad = ray.get(worker.run.remote())  # added
bad_seconds = time.monotonic() - start
assert bad == list(range(NUM_ITEMS)), bad

# Good: Overlapping computation with communication.
@ray.remote
class Worker:  # the seed names both versions Worker
    def __init__(self, work_queue):
        self.work_queue = work_queue
        self.processed = []  # added

    def process(self, work_item):  # assumed by the seed
        time.sleep(COMPUTE)
        self.processed.append(work_item)

    def ready(self):  # added
        return True

    def run(self):
        self.work_future = self.work_queue.get_work_item.remote()
        while True:
            # Get work from the queue.
            work_item = ray.get(self.work_future)
            if work_item is None:  # added: the queue is empty
                return self.processed  # added
            self.work_future = self.work_queue.get_work_item.remote()

            # Do work.
            self.process(work_item)

work_queue = WorkQueue.remote(range(NUM_ITEMS))  # added
worker = Worker.remote(work_queue)  # added
ray.get([work_queue.ready.remote(), worker.ready.remote()])  # added: time the run only
start = time.monotonic()
good = ray.get(worker.run.remote())  # added
good_seconds = time.monotonic() - start
assert good == list(range(NUM_ITEMS)), good

print(f"bad: {bad_seconds:.2f} s, good: {good_seconds:.2f} s")
# sequential: NUM_ITEMS * (LATENCY + COMPUTE) = 2.0 s; overlapped: about NUM_ITEMS * COMPUTE
assert bad_seconds >= NUM_ITEMS * (LATENCY + COMPUTE), bad_seconds
assert good_seconds < 0.8 * bad_seconds, (good_seconds, bad_seconds)
print("processed", len(good), "items; overlapping was faster")

ray.shutdown()
