"""A head restarted on its storage while the other nodes keep running: named detached actors
whose node survived are still there, with their state; everything that lived on the old
head's node, or belonged to its drivers, is reported dead with the reason."""

from __future__ import annotations

import os

import pytest
import quanta
import test_cli
from quanta import exceptions as qexc

shell = test_cli.shell  # a private TMPDIR; stops what it starts

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


# ------------------------------------------------------------------------------------------
# the same, through the commands README.md's "Restarting the head" gives
# ------------------------------------------------------------------------------------------
_FIRST = r"""
import json, sys
import quanta
from quanta.util.scheduling_strategies import NodeAffinitySchedulingStrategy

quanta.init(address="auto", namespace="app")

@quanta.remote
class Counter:
    def __init__(self):
        self.n = 0
    def add(self):
        import os
        self.n += 1
        return self.n, os.getpid(), quanta.get_runtime_context().get_node_id()

on_member = NodeAffinitySchedulingStrategy(sys.argv[1], soft=False)
kept = Counter.options(name="kept", lifetime="detached", scheduling_strategy=on_member).remote()
quanta.get(kept.add.remote())
print(json.dumps(quanta.get(kept.add.remote())))
"""

_AGAIN = r"""
import json
import quanta

quanta.init(address="auto", namespace="app")
print(json.dumps(quanta.get(quanta.get_actor("kept").add.remote(), timeout=30)))
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_head_restart_as_the_readme_says_keeps_the_members_and_their_actors(shell, helpers,
                                                                            tmp_path):
    import json
    import subprocess
    import sys

    from quanta._private import cluster

    def run(script: str, *args: str) -> list:
        res = subprocess.run([sys.executable, "-c", script, *args], env=shell.env,
                             cwd=shell.tmp, capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL)
        assert res.returncode == 0, res.stdout + res.stderr
        return json.loads(res.stdout.strip().splitlines()[-1])

    def member_alive_at_head() -> bool:
        status = json.loads(shell.quanta("status", "--json").stdout or "{}")
        nodes = status.get("cluster_nodes") or []
        return any(n["node_id"] == member["node_id"] and n["state"] == "ALIVE" for n in nodes)

    port, storage = str(_free_port()), str(tmp_path / "quanta-head.sqlite3")
    # quanta start --head --port 6379 --storage ~/quanta-head.sqlite3
    head = shell.start("--port", port, "--storage", storage)
    # quanta start --address=127.0.0.1:6379 --token-file /tmp/quanta-session-*/cluster_token
    member = shell.join(head, "--token-file",
                        os.path.join(head["session_dir"], "cluster_token"))
    assert helpers.wait_until(member_alive_at_head, 20)
    n, pid, node = run(_FIRST, member["node_id"])
    assert (n, node) == (2, member["node_id"])

    # quanta stop --head-only
    res = shell.quanta("stop", "--head-only")
    assert res.returncode == 0, res.stdout + res.stderr
    assert helpers.wait_until(lambda: not helpers.pid_alive(head["pid"]), 10)
    assert cluster.probe(member) is not None  # the member waits for its head
    # quanta start --head --port 6379 --storage ~/quanta-head.sqlite3
    head2 = shell.start("--port", port, "--storage", storage)
    assert head2["pid"] != head["pid"]
    assert helpers.wait_until(member_alive_at_head, 30)  # it joined again
    assert cluster.probe(member) is not None and helpers.pid_alive(member["pid"])
    assert run(_AGAIN) == [3, pid, member["node_id"]]  # same process, same state

    res = shell.quanta("stop")
    assert res.returncode == 0 and f"pid {member['pid']}" in res.stdout
