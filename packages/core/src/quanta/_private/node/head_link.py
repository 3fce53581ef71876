"""A member node daemon's link to the head (``quanta start --address HOST:PORT``).

One background thread registers the node with the head's control store and then reports its
available resources every ``heartbeat_period_s`` (the head says how often); each answer
carries the cluster's resource view (every alive node's resources), which it hands to the
daemon's scheduler (``NodeDaemon.view``). A report answered
``known=False`` (the head restarted, or declared this node dead after a pause) makes it
register again. Registration failures are retried with backoff, except a refused token, which
ends the daemon: it cannot ever join. The daemon's resource table belongs to its reactor, so
the thread reads it through a snapshot the reactor refreshes. With TLS (``--tls-*``) the
link uses the node's own certificate (``daemon.reactor.tls``).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from typing import Any

from quanta._private.control_client import ControlClient, TokenRejected, node_from_pb
from quanta._proto import control_pb2 as pb


class HeadLink:
    def __init__(self, daemon: Any, head_address: str, token: str) -> None:
        self.daemon = daemon
        self.client = ControlClient(head_address, token, timeout=5.0,
                                    tls=daemon.reactor.tls or False)
        self.period = 0.5
        self.registered = False
        self.settled = threading.Event()  # registered, or failed for good (``failure``)
        self.failure: str | None = None
        self._stop = threading.Event()
        self._available: dict[str, float] = daemon.resources.available.to_dict()
        self._pending: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._run, name="quanta-head-link", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, reason: str) -> None:
        """Tell the head this node leaves (best effort) and end the thread."""
        self._stop.set()
        if self.registered:
            try:
                self.client.unregister_node(self.daemon.node_id, reason)
            except Exception:  # noqa: BLE001 - the head may be gone already
                pass

    def _node(self) -> pb.NodeInfo:
        d = self.daemon
        msg = pb.NodeInfo(node_id=d.node_id, daemon_address=d.address, node_ip=d.args.node_ip,
                          hostname=socket.gethostname(), is_head=False, pid=os.getpid(),
                          session_dir=d.session_dir, node_address=d.tcp_address or "")
        msg.total.update(d.resources.total.to_dict())
        msg.available.update(self._available)
        return msg

    def _snapshot(self) -> None:
        def take() -> None:
            self._available = self.daemon.resources.available.to_dict()
            self._pending = self.daemon.pending_demands()

        self.daemon.reactor.call_soon_threadsafe(take)

    def _register(self) -> bool:
        delay = 0.2
        while not self._stop.is_set():
            try:
                reply = self.client.register_node(self._node())
            except TokenRejected as e:
                self._fatal(str(e))
                return False
            except (ConnectionError, RuntimeError) as e:
                print(f"quanta node daemon: cannot register with the head yet: {e}",
                      file=sys.stderr, flush=True)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            self.period = reply.heartbeat_period_s or self.period
            nodes = [node_from_pb(n) for n in reply.nodes]
            head = [n["node_address"] for n in nodes if n["is_head"] and n["node_address"]]
            if head:
                self.daemon.head_node_address = head[0]
            self.daemon.reactor.call_soon_threadsafe(lambda n=nodes: self.daemon.view.update(n))
            if self.registered:  # the head restarted, or took this node for dead: it
                # places its groups' bundles again, so the ones held here are stale; it
                # adopts the actors running here that it still knows, or kills them
                self.daemon.reactor.call_soon_threadsafe(self._registered_again)
            self.registered = True
            self.settled.set()
            return True
        return False

    def _registered_again(self) -> None:
        d = self.daemon
        d.bundles.release_all("The placement group's bundle on this node was given up when "
                              "the node joined the head again; the head places it anew.")
        d.hosted.report()

    def _run(self) -> None:
        if not self._register():
            return
        while not self._stop.wait(self.period):
            self._snapshot()
            try:
                known, nodes = self.client.heartbeat(self.daemon.node_id, self._available,
                                                     self._pending)
            except TokenRejected as e:
                self._fatal(str(e))
                return
            except (ConnectionError, RuntimeError):
                continue  # the head is away: keep trying, it marks us dead if it must
            self.daemon.reactor.call_soon_threadsafe(lambda n=nodes: self.daemon.view.update(n))
            if not known and not self._register():
                return

    def _fatal(self, why: str) -> None:
        self.failure = why
        if not self.settled.is_set():  # still joining: ``NodeDaemon.join`` reports it
            self.settled.set()
            return
        print(f"quanta node daemon: leaving the cluster: {why}", file=sys.stderr, flush=True)
        self.daemon.reactor.call_soon_threadsafe(self.daemon.shutdown)

