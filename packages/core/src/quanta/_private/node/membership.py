"""Cluster membership, kept by the head: which node daemons belong to the cluster and which
of them are alive.

A node daemon joins with ``RegisterNode`` and then reports every ``heartbeat_period_s``; a node
whose last report is older than ``dead_after_s`` is marked ``DEAD`` by :meth:`Membership.sweep`
(the head runs it on a timer), with the reason. A node that leaves on purpose is marked dead at
once. Records live in the control store's ``nodes`` table, so after the head restarts on the
same storage it still knows its nodes: those that were alive get a fresh ``dead_after_s`` to
report again (their next heartbeat is answered ``known=False`` and they register again), and
are marked dead if they do not.

A record is a plain dict with the fields of ``NodeInfo`` in ``quanta/_proto/control.proto``.
Not thread-safe: the head calls it from its reactor only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from quanta._private.node.control_store import ControlStore

ALIVE = "ALIVE"
DEAD = "DEAD"


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a number of seconds") from None
    if value <= 0:
        raise ValueError(f"{name}={raw!r}: must be > 0")
    return value


HEARTBEAT_PERIOD_S = _env_seconds("QUANTA_HEARTBEAT_PERIOD_S", 0.5)
"""How often a node daemon reports to the head."""
DEAD_AFTER_S = _env_seconds("QUANTA_NODE_DEAD_AFTER_S", 3.0)
"""A node silent for this long is marked dead."""


class Membership:
    def __init__(self, control: ControlStore, clock: Callable[[], float] = time.time,
                 dead_after_s: float = DEAD_AFTER_S) -> None:
        self.control = control
        self.clock = clock
        self.dead_after_s = dead_after_s
        self.nodes: dict[str, dict[str, Any]] = {}
        self._deadline: dict[str, float] = {}
        self._joined: set[str] = set()  # registered with this head since it started
        now = clock()
        for rec in control.nodes():
            if "node_id" not in rec:
                continue  # a record from before membership existed
            self.nodes[rec["node_id"]] = rec
            if rec.get("state") == ALIVE:
                self._deadline[rec["node_id"]] = now + dead_after_s

    def register(self, info: dict[str, Any]) -> None:
        """Record ``info`` (NodeInfo fields; ``node_id`` required) as an alive node."""
        node_id = info["node_id"]
        if not node_id:
            raise ValueError("RegisterNode: node_id is empty")
        now = self.clock()
        rec = dict(info, state=ALIVE, death_reason="", registered_at=now, last_heartbeat=now)
        rec.setdefault("available", dict(rec.get("total", {})))
        self.nodes[node_id] = rec
        self._deadline[node_id] = now + self.dead_after_s
        self._joined.add(node_id)
        self.control.put_node(node_id, rec)

    def heartbeat(self, node_id: str, available: dict[str, float],
                  pending: list[dict[str, Any]] | None = None) -> bool:
        """Note a report (free resources, waiting lease requests by shape). False when
        ``node_id`` is not an alive member (it must register)."""
        rec = self.nodes.get(node_id)
        if rec is None or rec["state"] != ALIVE or node_id not in self._joined:
            return False
        now = self.clock()
        rec["last_heartbeat"] = now
        rec["available"] = dict(available)
        rec["pending"] = list(pending or [])
        self._deadline[node_id] = now + self.dead_after_s
        return True

    def mark_dead(self, node_id: str, reason: str) -> bool:
        """Mark an alive node dead. Returns whether it was alive."""
        rec = self.nodes.get(node_id)
        if rec is None or rec["state"] != ALIVE:
            return False
        rec["state"] = DEAD
        rec["death_reason"] = reason
        rec["available"] = {}
        rec["pending"] = []
        self._deadline.pop(node_id, None)
        self.control.put_node(node_id, rec)
        return True

    def sweep(self) -> list[str]:
        """Mark the nodes whose reports stopped as dead; return their ids."""
        now = self.clock()
        late = [n for n, t in self._deadline.items() if t <= now]
        for node_id in late:
            rec = self.nodes[node_id]
            silent = now - rec.get("last_heartbeat", now - self.dead_after_s)
            self.mark_dead(node_id, f"no heartbeat for {silent:.1f} s (a node is marked dead "
                                    f"after {self.dead_after_s:g} s of silence)")
        return late

    def alive(self) -> list[dict[str, Any]]:
        return [r for r in self.nodes.values() if r["state"] == ALIVE]

    def reporting(self) -> list[dict[str, Any]]:
        """The alive nodes that registered with this head since it started (a record
        reloaded from storage counts once its node has registered again): the cluster's
        resource view."""
        return [r for r in self.nodes.values()
                if r["state"] == ALIVE and r["node_id"] in self._joined]

    def all(self) -> list[dict[str, Any]]:
        """Every node, alive ones first, each group in registration order."""
        return sorted(self.nodes.values(),
                      key=lambda r: (r["state"] != ALIVE, r.get("registered_at", 0.0)))
