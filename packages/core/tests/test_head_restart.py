"""A head restarted on its storage while the other nodes keep running: named detached actors
whose node survived are still there, with their state; everything that lived on the old
head's node, or belonged to its drivers, is reported dead with the reason."""

from __future__ import annotations

import os

import pytest
import quanta
from quanta import exceptions as qexc

pytestmark = pytest.mark.timeout(120)


@quanta.remote
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def add(self) -> tuple[int, int]:
        self.n += 1
        return self.n, os.getpid()


def _named_alive(name: str) -> bool:
    try:
        quanta.get_actor(name)
    except ValueError:
        return False
    return True


def test_a_detached_actor_on_a_surviving_node_outlives_a_head_restart(make_cluster, tmp_path,
                                                                       helpers):
    c, (a,) = make_cluster({"num_cpus": 1, "storage": str(tmp_path / "control.sqlite3")},
                           {"num_cpus": 2, "resources": {"special": 1}})
    c.connect(namespace="app")
    kept = Counter.options(name="kept", lifetime="detached", resources={"special": 0.5}).remote()
    on_head = Counter.options(name="on_head", lifetime="detached", num_cpus=0).remote()
    mine = Counter.options(name="mine", resources={"special": 0.5}).remote()
    assert quanta.get(kept.add.remote())[0] == 1
    _, pid = quanta.get(kept.add.remote())
    quanta.get([on_head.add.remote(), mine.add.remote()])

    c.restart_head()
    c.connect(namespace="app")
    again = quanta.get_actor("kept")
    assert quanta.get(again.add.remote(), timeout=30) == (3, pid)  # same process, same state
    # the old head's node never joins again: its actors die once it is given up
    assert helpers.wait_until(lambda: not _named_alive("on_head"), 20)
    assert not _named_alive("mine")  # owned by the old run's driver
    quanta.kill(again)
    with pytest.raises(qexc.RayActorError):
        quanta.get(again.add.remote(), timeout=30)
