"""``quanta microbenchmark``: the task, object, actor and placement-group workloads of Ray's
``ray microbenchmark``,
printed in the same shape (``<name> per second <mean> +- <stdev>``) so the two read side by
side. Each workload runs a warm-up, then ``rounds`` timed rounds of about ``seconds`` each."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import quanta


def _timeit(name: str, fn: Callable[[], None], units: int, rounds: int, seconds: float,
            results: list) -> None:
    fn()  # warm-up
    rates = []
    for _ in range(rounds):
        n, start = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        rates.append(n * units / elapsed)
    mean = statistics.mean(rates)
    sd = statistics.stdev(rates) if len(rates) > 1 else 0.0
    print(f"{name} per second {mean:.2f} +- {sd:.2f}", flush=True)
    results.append((name, mean, sd))


def run(rounds: int = 3, seconds: float = 2.0, only: list[str] | None = None) -> list:
    import numpy as np

    results: list = []
    quanta.init(ignore_reinit_error=True)

    def want(name: str) -> bool:
        return not only or any(o in name for o in only)

    @quanta.remote
    def noop():
        return b"ok"

    @quanta.remote
    def put_many(n):
        for _ in range(n):
            quanta.put(0)
        return n

    @quanta.remote
    def put_big(n, size):
        for _ in range(n):
            quanta.put(np.zeros(size // 8, dtype=np.int64))
        return n

    @quanta.remote
    def submit_many(n):
        quanta.get([noop.remote() for _ in range(n)])
        return n

    @quanta.remote
    def create_refs(n):
        return [quanta.put(i) for i in range(n)]

    value = quanta.put(0)
    if want("single client get calls"):
        _timeit("single client get calls", lambda: quanta.get(value), 1, rounds, seconds,
                results)
    if want("single client put calls"):
        _timeit("single client put calls", lambda: quanta.put(0), 1, rounds, seconds, results)
    if want("multi client put calls"):
        _timeit("multi client put calls",
                lambda: quanta.get([put_many.remote(100) for _ in range(10)]), 1000, rounds,
                seconds, results)
    if want("single client put gigabytes"):
        arr = np.zeros(800 * 1024 * 1024 // 8, dtype=np.int64)
        _timeit("single client put gigabytes", lambda: quanta.put(arr), 800 / 1024, rounds,
                seconds, results)
        del arr
    if want("multi client put gigabytes"):
        _timeit("multi client put gigabytes",
                lambda: quanta.get([put_big.remote(10, 80 * 1024 * 1024) for _ in range(10)]),
                8000 / 1024, rounds, seconds, results)
    if want("single client tasks and get batch"):
        _timeit("single client tasks and get batch",
                lambda: quanta.get([noop.remote() for _ in range(1000)]), 1, rounds, seconds,
                results)
    if want("single client get object containing 10k refs"):
        outer = create_refs.remote(10000)
        quanta.get(outer)
        _timeit("single client get object containing 10k refs", lambda: quanta.get(outer), 1,
                rounds, seconds, results)
    if want("single client wait 1k refs"):
        def wait_1k():
            refs = [noop.remote() for _ in range(1000)]
            while refs:
                _, refs = quanta.wait(refs, num_returns=1)
        _timeit("single client wait 1k refs", wait_1k, 1, rounds, seconds, results)
    if want("single client tasks sync"):
        _timeit("single client tasks sync", lambda: quanta.get(noop.remote()), 1, rounds,
                seconds, results)
    if want("single client tasks async"):
        _timeit("single client tasks async",
                lambda: quanta.get([noop.remote() for _ in range(1000)]), 1000, rounds, seconds,
                results)
    if want("multi client tasks async"):
        @quanta.remote
        class TaskClient:
            def submit(self, n):
                quanta.get([noop.remote() for _ in range(n)])

        clients = [TaskClient.remote() for _ in range(4)]
        _timeit("multi client tasks async",
                lambda: quanta.get([c.submit.remote(2500) for c in clients]), 10000, rounds,
                seconds, results)
        del clients
    _actor_rows(want, rounds, seconds, results)
    if want("placement group create/removal"):
        from quanta.util.placement_group import placement_group, remove_placement_group

        def pg_create_removal(num_pgs: int = 100) -> None:
            pgs = [placement_group([{"CPU": 0.001}]) for _ in range(num_pgs)]
            for pg in pgs:
                pg.wait(timeout_seconds=30)
            for pg in pgs:
                remove_placement_group(pg)

        _timeit("placement group create/removal", pg_create_removal, 100, rounds, seconds,
                results)
    quanta.shutdown()
    return results


def _actor_rows(want: Callable[[str], bool], rounds: int, seconds: float,
                results: list) -> None:
    """Ray's actor rows: the same clients and servers as ``ray microbenchmark``."""
    import os

    n = 1000
    n_servers = max(1, (os.cpu_count() or 2) // 2)

    @quanta.remote
    class Actor:
        def small_value(self):
            return b"ok"

        def small_value_arg(self, x):
            return b"ok"

    @quanta.remote
    class AsyncActor:
        async def small_value(self):
            return b"ok"

        async def small_value_with_arg(self, i):
            return b"ok"

    @quanta.remote
    class Client:
        def __init__(self, servers):
            self.servers = servers if isinstance(servers, list) else [servers]

        def small_value_batch(self, n):
            quanta.get([s.small_value.remote() for s in self.servers for _ in range(n)])

        def small_value_batch_arg(self, n):
            x = quanta.put(0)
            quanta.get([s.small_value_arg.remote(x) for s in self.servers for _ in range(n)])

    @quanta.remote
    def work(actors, n):
        quanta.get([actors[i % len(actors)].small_value.remote() for i in range(n)])

    for cls, kind in ((Actor, "actor"), (AsyncActor, "async-actor")):
        a = cls.remote()
        if want(f"1:1 {kind} calls sync"):
            _timeit(f"1:1 {kind} calls sync", lambda a=a: quanta.get(a.small_value.remote()),
                    1, rounds, seconds, results)
        if want(f"1:1 {kind} calls async"):
            _timeit(f"1:1 {kind} calls async",
                    lambda a=a: quanta.get([a.small_value.remote() for _ in range(n)]), n,
                    rounds, seconds, results)
        if kind == "async-actor" and want("1:1 async-actor calls with args async"):
            _timeit("1:1 async-actor calls with args async",
                    lambda a=a: quanta.get([a.small_value_with_arg.remote(i)
                                            for i in range(n)]), n, rounds, seconds, results)
        if kind == "actor" and want("1:1 actor calls concurrent"):
            c = Actor.options(max_concurrency=16).remote()
            _timeit("1:1 actor calls concurrent",
                    lambda c=c: quanta.get([c.small_value.remote() for _ in range(n)]), n, rounds,
                    seconds, results)
        servers = [cls.remote() for _ in range(n_servers)]
        if want(f"1:n {kind} calls async"):
            client = Client.remote(servers)
            _timeit(f"1:n {kind} calls async",
                    lambda client=client: quanta.get(client.small_value_batch.remote(n)),
                    n * len(servers), rounds, seconds, results)
        if want(f"n:n {kind} calls async"):
            m = 4
            _timeit(f"n:n {kind} calls async",
                    lambda servers=servers, m=m: quanta.get([work.remote(servers, n)
                                                             for _ in range(m)]),
                    m * n, rounds, seconds, results)
        if kind == "actor" and want("n:n actor calls with arg async"):
            clients = [Client.remote(s) for s in servers]
            _timeit("n:n actor calls with arg async",
                    lambda clients=clients: quanta.get([c.small_value_batch_arg.remote(n)
                                                        for c in clients]),
                    n * len(clients), rounds, seconds, results)
