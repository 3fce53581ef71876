"""Several node daemons on this machine, for tests: Ray's ``ray.cluster_utils.Cluster``.

Each node is a real node daemon process (the same as ``quanta start``): the first is the head,
serving the control store over gRPC on a free loopback port; the others join it as members with
the cluster's token. Nothing is recorded in ``$TMPDIR/quanta`` (the nodes belong to the
``Cluster`` object, not to ``quanta start``/``stop``), and everything is stopped by
:meth:`Cluster.shutdown` (also at interpreter exit).

What runs on the members today: nothing yet (they register and report, see
``docs/compatibility.md``); tests use the cluster for membership and failure detection.
"""

from __future__ import annotations

import atexit
import contextlib
import time
from typing import Any

from quanta._private import cluster_token

_NODE_ARGS = ("num_cpus", "num_gpus", "resources", "memory", "object_store_memory", "storage")


class ClusterNode:
    """One node daemon of a :class:`Cluster`."""

    def __init__(self, proc: Any, info: dict[str, Any], is_head: bool) -> None:
        self.proc = proc
        self.node_id: str = info["NodeID"]
        self.unique_id = self.node_id  # Ray's name for it
        self.address: str = info["DaemonAddress"]
        self.session_dir: str = info["SessionDir"]
        self.object_store_dir: str = info["ObjectStoreDir"]
        self.node_address: str | None = info.get("NodeAddress")  # its TCP node port
        self.is_head = is_head

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def __repr__(self) -> str:
        role = "head" if self.is_head else "member"
        return f"ClusterNode({role}, {self.node_id[:12]}, pid {self.pid})"


class Cluster:
    """``Cluster(initialize_head=True, head_node_args={"num_cpus": 2})``, then
    ``add_node(num_cpus=1)``, ``wait_for_nodes()``, ``remove_node(node)``, ``shutdown()``.

    ``tls=(cert, key, ca)`` (a Quanta addition): every node uses TLS with these files (see
    ``quanta start --tls-cert``); by default none does."""

    def __init__(self, initialize_head: bool = False, connect: bool = False,
                 head_node_args: dict[str, Any] | None = None,
                 shutdown_at_exit: bool = True,
                 tls: tuple[str, str, str] | None = None) -> None:
        from quanta._private import tls as _tls

        self.tls = _tls.configure(*tls) if tls else None
        self.head_node: ClusterNode | None = None
        self.worker_nodes: list[ClusterNode] = []
        self.token = cluster_token.generate()
        self.control_address: str | None = None
        self._connected = False
        self._head_args: dict[str, Any] = {}
        if shutdown_at_exit:
            atexit.register(self.shutdown)
        if initialize_head:
            self.add_node(**(head_node_args or {}))
            if connect:
                self.connect()
        elif connect:
            raise ValueError("Cluster(connect=True) needs initialize_head=True")

    @property
    def address(self) -> str:
        """The head's control-store address, ``host:port``."""
        if self.control_address is None:
            raise RuntimeError("the cluster has no head node yet: add_node() first")
        return self.control_address

    def add_node(self, wait: bool = True, **node_args: Any) -> ClusterNode:
        """Start a node daemon: the head if there is none yet, else a member that joins it.
        ``node_args``: ``num_cpus`` (default 1), ``num_gpus``, ``resources``, ``memory``,
        ``object_store_memory``; for the head also ``storage``, the control store's SQLite
        file (default: in its session directory, gone when it stops)."""
        from quanta._private import resource_detect
        from quanta._private.node_launcher import start_head_node

        unknown = set(node_args) - set(_NODE_ARGS)
        if unknown:
            raise TypeError(f"add_node() got unknown node arguments {sorted(unknown)}; "
                            f"allowed: {list(_NODE_ARGS)}")
        memory = node_args.get("memory") or 2 * 1024**3
        store = node_args.get("object_store_memory") or min(
            resource_detect.default_object_store_bytes(memory), 512 * 1024**2)
        common = dict(num_cpus=node_args.get("num_cpus", 1),
                      num_gpus=node_args.get("num_gpus", 0) or 0, memory=int(memory),
                      object_store_memory=int(store),
                      resources=dict(node_args.get("resources") or {}), node_ip="127.0.0.1",
                      token=self.token, tls=self.tls.paths() if self.tls else False)
        if self.head_node is None:
            port = int(self.control_address.rpartition(":")[2]) if self.control_address else 0
            proc, info, _ = start_head_node(control_port=port, storage=node_args.get("storage"),
                                            **common)
            node = self.head_node = ClusterNode(proc, info, True)
            self._head_args = dict(node_args)
            self.control_address = info["ControlAddress"]
        else:
            if "storage" in node_args:
                raise TypeError("add_node(storage=...) is for the head only")
            proc, info, _ = start_head_node(head_address=self.address, **common)
            node = ClusterNode(proc, info, False)
            self.worker_nodes.append(node)
        if wait:
            self.wait_for_nodes()
        return node

    def restart_head(self, allow_graceful: bool = True) -> ClusterNode:
        """Stop the head node and start it again with the same arguments, control port and
        token (a Quanta addition, for testing what survives a head restart: pass the head a
        ``storage`` file to keep its control state). Members keep running and join the new
        head; this process's driver, connected to the old head, is disconnected first."""
        if self.head_node is None:
            raise RuntimeError("the cluster has no head node: add_node() first")
        if self._connected:
            import quanta

            quanta.shutdown()
            self._connected = False
        self.remove_node(self.head_node, allow_graceful=allow_graceful)
        return self.add_node(**self._head_args)

    def list_all_nodes(self) -> list[ClusterNode]:
        return ([self.head_node] if self.head_node else []) + list(self.worker_nodes)

    def node_states(self) -> dict[str, dict[str, Any]]:
        """The head's membership table: node id -> record (``state``, ``death_reason``, ...)."""
        from quanta._private.control_client import ControlClient

        with ControlClient(self.address, self.token, tls=self.tls or False) as client:
            return {n["node_id"]: n for n in client.list_nodes()}

    def wait_for_nodes(self, timeout: float = 30.0) -> None:
        """Wait until the head lists every live node of this cluster as alive, and every
        live node knows all the others (work can be sent to any of them from any of them)."""
        from quanta._private import cluster

        live = [n for n in self.list_all_nodes() if n.alive()]
        want = {n.node_id for n in live}
        deadline = time.monotonic() + timeout
        while True:
            states = self.node_states()
            if all(states.get(n, {}).get("state") == "ALIVE" for n in want):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"nodes not alive at the head after {timeout} s: "
                                   f"{sorted(n for n in want if n not in states)}")
            time.sleep(0.05)
        for node in live:
            while True:
                known = {n["NodeID"] for n in cluster.rpc(node.address, "nodes")
                         if n.get("Alive")}
                if want <= known:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"node {node.node_id} does not know of nodes "
                                       f"{sorted(want - known)} after {timeout} s")
                time.sleep(0.05)

    def remove_node(self, node: ClusterNode, allow_graceful: bool = True) -> None:
        """Stop ``node``: asked to shut down (it leaves the cluster at once), or, with
        ``allow_graceful=False``, killed with SIGKILL like a crashed machine (the head notices
        when its heartbeats stop)."""
        from quanta._private import cluster

        cluster.stop_node_daemon(
            {"pid": node.pid, "address": node.address, "session_dir": node.session_dir,
             "object_store_dir": node.object_store_dir}, force=not allow_graceful, timeout=10)
        with contextlib.suppress(Exception):
            node.proc.wait(10)  # reap it: it is this process's child
        if node is self.head_node:
            self.head_node = None
        elif node in self.worker_nodes:
            self.worker_nodes.remove(node)

    def connect(self, namespace: str | None = None) -> dict[str, Any]:
        """``quanta.init()`` a driver in this process on the head node."""
        import quanta

        if self.head_node is None:
            raise RuntimeError("the cluster has no head node: add_node() first")
        self._connected = True
        return quanta.init(address=self.head_node.address, namespace=namespace)

    def shutdown(self) -> None:
        """Disconnect this process's driver and stop every node (members first)."""
        if self._connected:
            import quanta

            quanta.shutdown()
            self._connected = False
        for node in list(self.worker_nodes):
            self.remove_node(node)
        if self.head_node is not None:
            self.remove_node(self.head_node)
