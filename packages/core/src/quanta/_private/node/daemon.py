"""The node daemon: one per machine. It hosts the local scheduler (worker leases), the worker
pool, the shared-memory object store's accounting and, on the head node, the control store.

Design
------
The daemon is single-threaded: its reactor runs on the main thread, so its state needs no
locks. Workers are forked from a *zygote*: a child forked right after start-up, before any
socket or thread exists, with the worker's modules already imported. Forking from it costs a
few milliseconds instead of a fresh interpreter's ~100 ms, and the workers share the imported
code's memory pages with it.

A lease request names a resource shape. The daemon grants a worker when the shape fits and
an idle worker exists (starting one if none does), answers "queued" when it must wait (the
owner may then pipeline tasks on the leases it has), and "infeasible" at once when the node
could never fit it. When requests wait, owners are asked to give back idle leases.

Lifetime: a daemon started by ``quanta start --head`` belongs to no driver: drivers connect and
leave, and the daemon frees what each one owned when its connection closes. A daemon started
by ``init()`` belongs to that driver. When the driver's connection
closes (it exited or was killed) or the driver process dies (``PR_SET_PDEATHSIG``), the daemon
kills the zygote and every worker by pid, deletes its shared-memory files and session
directory, and exits. Workers also die with the zygote, and the zygote with the daemon, by
their own parent-death signals.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import errno
import json
import os
import pickle
import shutil
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from typing import Any

from quanta._private import fd_limit, tls
from quanta._private import messages as m
from quanta._private.node import object_transfer
from quanta._private.node.actor_manager import ActorManager
from quanta._private.node.cluster_view import ClusterView, Infeasible
from quanta._private.node.control_store import ControlStore
from quanta._private.node.group_leases import GroupLeases
from quanta._private.node.hosted_actors import HostedActors
from quanta._private.node.membership import Membership
from quanta._private.node.node_bundles import NodeBundles
from quanta._private.node.node_links import NodeLinks
from quanta._private.node.object_store import ObjectStore
from quanta._private.node.placement_groups import (
    PlacementGroupManager,
    group_of,
    pg_of_resource,
)
from quanta._private.node.storage import open_storage
from quanta._private.resources import Allocation, NodeResources, ResourceSet
from quanta._private.transport import (
    Connection,
    ConnectionClosed,
    Reactor,
    log_limited,
    recv_exact,
    routed_address,
)

IDLE_WORKER_TIMEOUT_S = 10.0
# calls answered later by their own handlers (in _call), not by an rpc_ method
_DEFERRED_CALLS = frozenset({"pull_object", "export_function", "get_function",
                             "wait_placement_group", "locate_placement_group"})
HEAD_TABLE = "head"  # the head's own settings in the control store (its node port)
SWEEP_PERIOD_S = 0.25  # how often the head looks for nodes that stopped reporting
_PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (no-op elsewhere)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class WorkerInfo:
    __slots__ = ("worker_id", "pid", "conn", "address", "owner", "alloc", "blocked", "idle_since",
                 "actor_id")

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self.pid = 0
        self.conn: Connection | None = None
        self.address = ""
        self.owner: Connection | None = None
        self.alloc: Allocation | None = None
        self.blocked = False
        self.idle_since = time.monotonic()
        self.actor_id: str | None = None  # set when the worker is dedicated to an actor


class LeaseRequest:
    __slots__ = ("conn", "req", "resources", "key_list", "queued")

    def __init__(self, conn, req, resources, key_list):
        self.conn = conn
        self.req = req
        self.resources = resources
        self.key_list = key_list
        self.queued = False

    def tell_queued(self) -> None:
        """Answer the submitter "queued" (once): it must wait, so it may pipeline."""
        if not self.queued:
            self.queued = True
            self._send((m.REPLY, self.req, True, "queued"))

    def fail(self, why: str) -> None:
        """Answer the submitter that this request can never be granted, and why."""
        self._send((m.LEASE_FAIL, self.req, why, self.key_list))

    def _send(self, msg: tuple) -> None:
        try:
            self.conn.send(msg)
        except ConnectionClosed:
            pass


# ----------------------------------------------------------------------------------------
# zygote
# ----------------------------------------------------------------------------------------
_FRAME = struct.Struct("<I")


def _send_frame(sock: socket.socket, obj: Any) -> None:
    import pickle

    data = pickle.dumps(obj)
    sock.sendall(_FRAME.pack(len(data)) + data)


def _recv_frame(sock: socket.socket) -> Any:
    import pickle

    try:
        head = recv_exact(sock, 4)
        return pickle.loads(recv_exact(sock, _FRAME.unpack(head)[0]))
    except EOFError:
        return None


def _zygote(sock: socket.socket, worker_args: dict[str, Any]) -> None:
    """Fork workers on request. Runs in a child of the daemon with no threads."""
    set_parent_death_signal(signal.SIGKILL)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    from quanta._private import worker_main  # noqa: F401 - import once, share with workers

    while True:
        msg = _recv_frame(sock)
        if msg is None:
            os._exit(0)
        worker_id = msg
        zygote_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            sock.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            set_parent_death_signal(signal.SIGKILL)
            if os.getppid() != zygote_pid:  # the zygote died before the signal was armed
                os._exit(0)
            try:
                worker_main.run_worker(worker_id=worker_id, **worker_args)
            finally:
                os._exit(0)
        _send_frame(sock, (m.NOTIFY, "worker_forked", (worker_id, pid)))


# ----------------------------------------------------------------------------------------
# the daemon
# ----------------------------------------------------------------------------------------
class NodeDaemon:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.node_id = uuid.uuid4().hex
        self.session_dir = args.session_dir
        os.makedirs(os.path.join(self.session_dir, "sockets"), exist_ok=True)
        self.address = f"unix://{os.path.join(self.session_dir, 'sockets', 'node.sock')}"
        total = {"CPU": args.num_cpus, "memory": args.memory,
                 "object_store_memory": args.object_store_memory}
        if args.num_gpus:
            total["GPU"] = args.num_gpus
        total.update(json.loads(args.resources or "{}"))
        total[f"node:{args.node_ip}"] = 1.0
        self.resources = NodeResources(ResourceSet(total))
        shm_root = args.shm_dir
        self.store = ObjectStore(
            os.path.join(shm_root, f"quanta-{os.path.basename(self.session_dir)}"),
            int(args.object_store_memory),
            os.path.join(self.session_dir, "spill"),
        )
        self.control = ControlStore(open_storage(
            args.storage or os.path.join(self.session_dir, "control.sqlite3")))
        self.token = self._cluster_token()
        self.workers: dict[str, WorkerInfo] = {}
        self.idle: list[str] = []
        self.starting = 0
        self.requests: collections.deque[LeaseRequest] = collections.deque()
        self.owner_conn: Connection | None = None
        self.stopping = False
        self.reclaim_told: set[Connection] = set()
        self.worker_args = dict(
            session_dir=self.session_dir,
            daemon_address=self.address,
            node_id=self.node_id,
            store_dir=self.store.shm_dir,
        )
        self.zygote_sock = self._start_zygote()
        # TLS on the node port (and the head's gRPC port) when --tls-* are given (tls.py)
        self.reactor = Reactor(self._dispatch, token=self.token, tls=args.tls)
        tls.write_session(self.session_dir, self.reactor.tls)
        if hasattr(self.control.storage, "on_dirty"):
            self.control.storage.on_dirty = lambda: self.reactor.call_later(
                0.005, self._flush_storage)
            self.control.storage.flush()  # what start-up wrote before there was a reactor
        self.reactor.listen(self.address)
        self.zygote = Connection(self.zygote_sock, self.reactor)
        self.zygote.on_close.append(lambda c: self.shutdown())
        self.reactor.register(self.zygote)
        self.cluster_id = self.node_id
        self.tcp_address: str | None = None
        if args.tcp_port is not None:  # before the membership records this node's addresses
            self._listen_node_port()
        self.membership = Membership(self.control)
        self.membership.register(self.member_record())
        self.view = ClusterView(self.node_id)
        self.links = NodeLinks(self)
        self.pulling: dict[str, list[Any]] = {}  # object pulls in progress -> their replies
        self.control_server: Any = None
        self.control_address: str | None = None
        self.head_link: Any = None
        self.actors = ActorManager(self)
        self.hosted = HostedActors(self)  # actors placed here by the head's actor manager
        self.head_node_address: str | None = None  # members: the head's node port
        self.bundles = NodeBundles(self)  # the bundles this node holds
        self.group_leases = GroupLeases(self)
        self.pgs = PlacementGroupManager(self)  # the cluster's groups (head or lone node)
        self.control.finish_stale_jobs()  # a head restarted on its storage: drivers are gone
        self.pgs.restore()
        self.actors.restore()
        self.job_namespaces: dict[str, str] = {}
        self._handlers = {
            m.CALL: self._on_call,
            m.NOTIFY: self._on_notify,
            m.LEASE_REQUEST: self._on_lease_request,
            m.LEASE_RETURN: self._on_lease_return,
            m.LEASE_CANCEL: self._on_lease_cancel,
            m.WORKER_BLOCKED: self._on_blocked,
            m.WORKER_UNBLOCKED: self._on_unblocked,
            m.OBJECT_SEALED: self._on_sealed,
            m.OBJECT_FREE: self._on_free,
            m.OBJECT_PULL: self._on_pull,
            m.ROUTE: lambda conn, msg: self.links.route(conn, msg[1]),
            m.REPLY: lambda conn, msg: self.links.on_reply(conn, msg),
        }

    def _start_zygote(self) -> socket.socket:
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            ours.close()
            try:
                _zygote(theirs, self.worker_args)
            finally:
                os._exit(0)
        theirs.close()
        self.zygote_pid = pid
        return ours

    def _cluster_token(self) -> str | None:
        """The secret every TCP connection to this node proves it holds (call_auth) and
        every control-plane call presents: ``QUANTA_CLUSTER_TOKEN`` when given, else (a head)
        the one kept in its storage, so that a head restarted on its ``--storage`` keeps its
        cluster, else a new one. None for a node without a TCP port (Unix sockets only)."""
        from quanta._private import cluster_token

        args = self.args
        if args.tcp_port is None and args.control_port is None and not args.head_address:
            return None
        if args.head_address:  # a member: the head's token, or it cannot join
            return args.token or None
        stored = self.control.storage.get(HEAD_TABLE, b"token")
        token = args.token or (stored.decode() if stored else None) or cluster_token.generate()
        if args.control_port is not None and (stored is None or stored.decode() != token):
            self.control.storage.put(HEAD_TABLE, b"token", token.encode())
            self.control.storage.flush()
        return token

    def node_info(self) -> dict[str, Any]:
        return {
            "NodeID": self.node_id,
            "Alive": True,
            "NodeManagerAddress": self.args.node_ip,
            "NodeManagerHostname": socket.gethostname(),
            "NodeName": self.args.node_ip,
            "Resources": self.resources.total.to_dict(),
            "DaemonAddress": self.address,
            "ObjectStoreDir": self.store.shm_dir,
            "SessionDir": self.session_dir,
            "NodeAddress": self.tcp_address,
            "alive": True,
        }

    def member_record(self) -> dict[str, Any]:
        """This node as the membership table records it (``NodeInfo`` fields)."""
        return {
            "node_id": self.node_id,
            "daemon_address": self.address,
            "node_ip": self.args.node_ip,
            "hostname": socket.gethostname(),
            "is_head": not self.args.head_address,
            "total": self.resources.total.to_dict(),
            "available": self.resources.available.to_dict(),
            "pid": os.getpid(),
            "session_dir": self.session_dir,
            "node_address": self.tcp_address or "",
        }

    # --- the cluster: head (control-plane server) or member (link to the head) -----------
    def serve_control(self, port: int) -> str:
        """Serve the control store over gRPC on ``<node ip>:<port>`` (the head's ``--port``),
        accepting calls that present the cluster token (also written to the session
        directory, readable by this user only). Returns ``host:port``; raises OSError if it
        cannot bind."""
        from quanta._private import cluster_token
        from quanta._private.node.control_service import start_server

        token = self.token
        cluster_token.write(self.session_dir, token)
        self.control_server, bound = start_server(self, self.args.node_ip, port, token,
                                                  tls=self.reactor.tls)
        self.control_address = f"{self.args.node_ip}:{bound}"
        self.reactor.call_later(SWEEP_PERIOD_S, self._sweep_members)
        return self.control_address

    def node_joined(self, info: dict[str, Any]) -> list[dict[str, Any]]:
        """A member registered (head only): it can take work at once. Returns the alive
        nodes (the new member's first view)."""
        self.membership.register(info)
        alive = self.membership.reporting()
        self.view.update(alive)
        self.pgs.view_changed()
        return alive

    def node_left(self, node_id: str, reason: str) -> None:
        if self.membership.mark_dead(node_id, reason):
            self.view.update(self.membership.reporting())
            self._node_dead(node_id)

    def _node_dead(self, node_id: str) -> None:
        """The membership marked ``node_id`` dead (head): its bundles are placed again and
        restored actors waiting for it die."""
        self.pgs.node_dead(node_id)
        self.actors.node_dead(node_id)

    def _sweep_members(self) -> None:
        self.membership.heartbeat(self.node_id, self.resources.available.to_dict(),
                                  self.pending_demands())
        dead = self.membership.sweep()
        self.view.update(self.membership.reporting())
        for node_id in dead:
            self._node_dead(node_id)
        self.pgs.view_changed()
        self.reactor.call_later(SWEEP_PERIOD_S, self._sweep_members)

    def join(self, head_address: str, token: str, timeout: float = 10.0) -> None:
        """Register with the head at ``head_address`` and keep reporting to it. Raises
        RuntimeError when the head refuses this node or does not answer within ``timeout``."""
        from quanta._private.node.head_link import HeadLink

        self.head_link = HeadLink(self, head_address, token)
        self.head_link.start()
        if not self.head_link.settled.wait(timeout):
            raise RuntimeError(f"the head at {head_address} did not answer within {timeout:g} s")
        if self.head_link.failure:
            raise RuntimeError(self.head_link.failure)

    # --- loop -------------------------------------------------------------------------
    def run(self, ready_fd: int | None) -> None:
        for _ in range(int(self.args.num_prestart)):
            self._start_worker()
        self.reactor.call_later(1.0, self._reap_idle)
        if ready_fd is not None:
            info = dict(self.node_info(), ControlAddress=self.control_address,
                        HeadAddress=self.args.head_address)
            os.write(ready_fd, json.dumps(info).encode() + b"\n")
            os.close(ready_fd)
        self.reactor.run_forever()

    def _dispatch(self, conn: Connection, msg: tuple) -> None:
        handler = self._handlers.get(msg[0])
        if handler is not None:
            handler(conn, msg)

    def _adopt(self, conn: Connection) -> None:
        """A process of another node calls this daemon (leases, actors): what it leaves
        behind (leased workers, owned actors, subscriptions) goes when it disconnects."""
        conn.peer = ("remote", None)
        conn.on_close.append(self._on_client_closed)

    def _on_call(self, conn: Connection, msg: tuple) -> None:
        """A CALL: its handler's result or exception goes back as the REPLY (a malformed
        CALL, one not shaped ``(CALL, req, method, args)``, closes the connection: see
        transport's error boundary)."""
        _, req, method, args = msg
        if conn.peer is None:
            self._adopt(conn)
        try:
            if type(method) is not str or type(args) is not tuple:
                raise TypeError(f"malformed call: method {method!r}, args of type "
                                f"{type(args).__name__}")
            self._call(conn, req, method, args)
        except Exception as e:  # noqa: BLE001 - errors travel back to the caller
            self._reply_error(conn, req, e)

    def _reply_error(self, conn: Connection, req: Any, e: BaseException) -> None:
        try:
            try:
                conn.send((m.REPLY, req, False, e))
            except (pickle.PicklingError, TypeError, AttributeError):
                conn.send((m.REPLY, req, False, RuntimeError(f"{type(e).__name__}: {e}")))
        except ConnectionClosed:
            pass

    def _call(self, conn: Connection, req: Any, method: str, args: tuple) -> None:
        handler = getattr(self, "rpc_" + method, None)
        if handler is None and method not in _DEFERRED_CALLS:
            raise AttributeError(f"the node daemon has no method {method!r}")
        if method == "pull_object":  # answered when the copy is sealed here
            self._pull_object(conn, req, *args)
            return
        if method in ("export_function", "get_function") and self.head_link is not None:
            self._function_via_head(conn, req, method, args)
            return
        if method in ("wait_placement_group", "locate_placement_group"):
            # answered when the group is created (or removed)
            wait = self.pgs.wait if method == "wait_placement_group" else self.pgs.locate
            answer = wait(conn, req, *args)
            if answer is not None:
                conn.send((m.REPLY, req, True, answer))
            return
        result = handler(conn, *args)
        try:
            conn.send((m.REPLY, req, True, result))
        except ConnectionClosed:
            pass

    def _on_notify(self, conn: Connection, msg: tuple) -> None:
        """A one-way call: a handler that raises is logged (nobody waits for an answer)."""
        _, method, args = msg
        if conn.peer is None:
            self._adopt(conn)
        handler = getattr(self, "notify_" + method, None) if type(method) is str else None
        try:
            if handler is None or type(args) is not tuple:
                raise TypeError(f"no such notification {method!r} (or its arguments are not "
                                "a tuple)")
            handler(conn, *args)
        except Exception:  # noqa: BLE001 - the error boundary for one-way calls
            log_limited("notify", f"quanta node: notification {method!r} from "
                        f"{conn.describe()} failed", exc_info=True)

    def rpc_cluster_credentials(self, conn: Connection
                                ) -> tuple[str | None, tuple[str, str, str] | None]:
        """``(token, tls)`` for the node's own processes, over its Unix socket only (not a
        TLS relay's plain end): the cluster token they present when they connect to processes
        of other nodes, and the node's TLS files (cert, key, CA paths; None without TLS),
        which they use for those connections as the daemon does (tls.py)."""
        if conn.sock.family != socket.AF_UNIX or conn.via is not None:
            raise PermissionError("the cluster's credentials are given to local processes only")
        return self.token, None if self.reactor.tls is None else self.reactor.tls.paths()

    # --- clients ------------------------------------------------------------------------
    def rpc_register_driver(self, conn: Connection, job_id: str, pid: int,
                            primary: bool, namespace: str = "") -> dict[str, Any]:
        conn.peer = ("driver", job_id)
        conn.on_close.append(self._on_client_closed)
        if primary:
            self.owner_conn = conn
        info = {"job_id": job_id, "driver_pid": pid, "namespace": namespace,
                "node_id": self.node_id}
        self.notify_job_started(conn, job_id, info)
        if self.head_node_address is not None:  # the head keeps the cluster's jobs
            self.links.notify_node(self.head_node_address, "job_started", job_id, info)
        return self.node_info()

    def notify_job_started(self, conn: Connection, job_id: str, info: dict[str, Any]) -> None:
        """A driver started here, or on a member (head): record its job and namespace."""
        self.control.add_job(job_id, info)
        self.job_namespaces[job_id] = info.get("namespace", "")

    def rpc_job_namespace(self, conn: Connection, job_id: str) -> str:
        return self.job_namespaces.get(job_id, "")

    def process_address(self, process_id: str, local_address: str) -> str:
        """The address other processes reach a process of this node at: routed through the
        node's TCP port in a cluster, its own Unix socket otherwise."""
        if self.tcp_address is None:
            return local_address
        return routed_address(self.tcp_address, process_id)

    def rpc_register_worker(self, conn: Connection, worker_id: str, address: str,
                            pid: int) -> str:
        """Returns the address the worker is known by (see :meth:`process_address`)."""
        w = self.workers.get(worker_id)
        if w is None:
            raise KeyError(f"unknown worker {worker_id}")
        w.conn = conn
        w.address = address = self.process_address(worker_id, address)
        w.pid = pid
        conn.peer = ("worker", worker_id)
        conn.on_close.append(self._on_client_closed)
        self.starting -= 1
        w.idle_since = time.monotonic()
        self.idle.append(worker_id)
        self.reactor.call_later(0, self._schedule)
        return address

    def notify_worker_forked(self, conn: Connection, worker_id: str, pid: int) -> None:
        w = self.workers.get(worker_id)
        if w is not None:
            w.pid = pid

    def _on_client_closed(self, conn: Connection) -> None:
        kind, ident = conn.peer
        if kind == "home":
            return
        if kind == "worker":
            w = self.workers.pop(ident, None)
            if w is not None:
                if ident in self.idle:
                    self.idle.remove(ident)
                if w.alloc is not None:
                    self.resources.release(w.alloc)
                    w.alloc = None
                if w.actor_id is not None and not self.stopping:
                    if not self.hosted.worker_died(w):
                        self.actors.worker_died(w)
                self._remove_sockets(ident)
        if not self.stopping:
            self.actors.owner_gone(conn)
            self.pgs.owner_gone(conn)
            self.group_leases.drop_client(conn)
            if kind == "driver" and self.head_node_address is not None:
                self.links.notify_node(self.head_node_address, "job_ended", ident)
        # workers leased to a client that went away run orphaned tasks: stop them
        for w in list(self.workers.values()):
            if w.owner is conn:
                self._kill_worker(w)
        self.requests = collections.deque(r for r in self.requests if r.conn is not conn)
        self.reclaim_told.discard(conn)
        if conn is self.owner_conn:
            self.shutdown()
            return
        self._schedule()

    def _remove_sockets(self, process_id: str) -> None:
        """Delete a gone process's socket files (left behind when it was killed)."""
        self.links.forget_process(process_id)
        for suffix in (".sock", ".fds"):
            try:
                os.unlink(os.path.join(self.session_dir, "sockets", process_id + suffix))
            except OSError:
                pass

    # --- workers ------------------------------------------------------------------------
    def _start_worker(self) -> None:
        worker_id = "w-" + uuid.uuid4().hex[:12]
        self.workers[worker_id] = WorkerInfo(worker_id)
        self.starting += 1
        _send_frame(self.zygote_sock, worker_id)

    def dedicate_worker(self, schedule: ResourceSet, hold: ResourceSet,
                        actor_id: str) -> WorkerInfo | bool | None:
        """Give actor ``actor_id`` an idle worker holding ``hold``, if ``schedule`` and
        ``hold`` fit now. Returns the worker; None when they do not fit; True when they fit
        but no worker is idle (one must be started)."""
        if not self.resources.can_fit(schedule) or not self.resources.can_fit(hold):
            return None
        if not self.idle:
            return True
        w = self.workers[self.idle.pop()]
        w.alloc = self.resources.allocate(hold)
        w.actor_id = actor_id
        return w

    def send_actor_create(self, w: WorkerInfo, creation: dict[str, Any]) -> None:
        """Have the dedicated worker ``w`` become its actor (a closed connection is handled
        by the close handler: the actor restarts or dies)."""
        try:
            w.conn.send((m.ACTOR_CREATE, dict(creation, gpu_ids=w.alloc.gpu_ids)))
        except ConnectionClosed:
            pass

    def _kill_worker(self, w: WorkerInfo) -> None:
        if w.pid:
            try:
                os.kill(w.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _reap_idle(self) -> None:
        """Stop workers idle for long, keeping ``num_prestart`` warm ones."""
        now = time.monotonic()
        keep = int(self.args.num_prestart)
        for wid in list(self.idle):
            if len(self.idle) <= keep:
                break
            w = self.workers.get(wid)
            if w is not None and now - w.idle_since > IDLE_WORKER_TIMEOUT_S:
                if w.conn is not None and self.actors.owns_live_actors(w.conn):
                    continue  # its actors would die with it
                self.idle.remove(wid)
                self._kill_worker(w)
        if not self.stopping:
            self.reactor.call_later(1.0, self._reap_idle)

    # --- leases -------------------------------------------------------------------------
    def _on_lease_request(self, conn: Connection, msg: tuple) -> None:
        _, req, res, strategy, owner_address, *rest = msg
        spilled = bool(rest and rest[0])  # sent here by another node: grant or queue it
        if conn.peer is None:  # a submitter of another node: its leases go when it does
            self._adopt(conn)
        try:
            request = ResourceSet(res)
        except (TypeError, ValueError) as e:
            conn.send((m.LEASE_FAIL, req, str(e), [res, strategy]))
            return
        pg_id = group_of(request)
        if pg_id is not None:
            self.group_leases.submit(LeaseRequest(conn, req, request, [res, strategy]), pg_id)
            return
        if not spilled and (self.view.nodes or strategy != "DEFAULT"):
            try:
                target = self.view.choose(request, strategy, self.resources)
            except Infeasible as e:
                conn.send((m.LEASE_FAIL, req, str(e), [res, strategy]))
                return
            if target is not None:
                conn.send((m.LEASE_SPILL, req, target.node_id, target.address,
                           [res, strategy]))
                return
        elif not self.resources.feasible(request):
            total = self.resources.total
            conn.send((m.LEASE_FAIL, req,
                       f"No node can ever run this task: it requires {request!r} but the "
                       f"largest node in the cluster has {total!r}. Lower the task's resource "
                       "request or add a node that has them.", [res, strategy]))
            return
        self.queue_lease(LeaseRequest(conn, req, request, [res, strategy]))

    def queue_lease(self, lr: LeaseRequest) -> None:
        """Grant ``lr`` here as soon as its resources and a worker are free."""
        self.requests.append(lr)
        self._schedule()
        if lr in self.requests:
            lr.tell_queued()

    def _flush_storage(self) -> None:
        """Write the control store's pending changes; on failure (locked or full disk) keep
        them and try again shortly, without taking the node down."""
        try:
            self.control.storage.flush()
        except Exception as e:  # noqa: BLE001 - sqlite3.Error, OSError
            print(f"quanta node: writing the control store failed ({e}); retrying",
                  file=sys.stderr, flush=True)
            if not self.stopping:
                self.reactor.call_later(1.0, self._flush_storage)

    def fail_requests_of_pg(self, pg_id: str, why: str) -> None:
        """This node released a placement group: fail the lease requests queued for it."""
        keep = collections.deque()
        for lr in self.requests:
            if any(pg_of_resource(n) == pg_id for n in lr.resources):
                lr.fail(why)
            else:
                keep.append(lr)
        self.requests = keep
        self.group_leases.forget(pg_id)

    def _schedule(self) -> None:
        if self.pgs.pending:
            self.pgs.schedule()
        if self.actors.pending or self.hosted.pending:
            need = self.actors.schedule() + self.hosted.schedule()
            # Actors each need a worker of their own: start them in parallel.
            for _ in range(max(0, min(need, 16) - self.starting)):
                self._start_worker()
        if not self.requests:
            if self.reclaim_told:
                self._update_reclaim()
            return
        waiting = 0
        remaining: collections.deque[LeaseRequest] = collections.deque()
        for lr in self.requests:
            if not self.resources.can_fit(lr.resources):
                remaining.append(lr)
                continue
            if not self.idle:
                waiting += 1
                remaining.append(lr)
                continue
            w = self.workers[self.idle.pop()]
            w.alloc = self.resources.allocate(lr.resources)
            w.owner = lr.conn
            try:
                lr.conn.send((m.LEASE_GRANT, lr.req, w.worker_id, w.address, w.alloc.gpu_ids,
                              lr.key_list, lr.queued))
            except ConnectionClosed:
                self.resources.release(w.alloc)
                w.alloc = None
                w.owner = None
                self.idle.append(w.worker_id)
        self.requests = remaining
        starts = min(waiting - self.starting, max(2, int(self.args.num_cpus)) - self.starting)
        for _ in range(max(0, starts)):
            self._start_worker()
        self._update_reclaim()

    def _update_reclaim(self) -> None:
        """While lease requests wait, every owner holding leases is asked to return idle ones
        at once instead of letting them linger; the request is lifted when none waits."""
        if self.requests:
            owners = {w.owner for w in self.workers.values() if w.owner is not None}
            for owner in owners - self.reclaim_told:
                self.reclaim_told.add(owner)
                try:
                    owner.send((m.LEASE_RECLAIM, True))
                except ConnectionClosed:
                    pass
        elif self.reclaim_told:
            for owner in self.reclaim_told:
                try:
                    owner.send((m.LEASE_RECLAIM, False))
                except ConnectionClosed:
                    pass
            self.reclaim_told.clear()

    def _on_lease_cancel(self, conn: Connection, msg: tuple) -> None:
        """The owner has no task left for this request: drop it if it still waits here."""
        req = msg[1]
        lr = next((r for r in self.requests if r.conn is conn and r.req == req), None)
        if lr is not None:
            self.requests.remove(lr)
        else:
            lr = self.group_leases.cancel(conn, req)
        if lr is not None:
            try:
                conn.send((m.LEASE_CANCELLED, req, lr.key_list))
            except ConnectionClosed:
                pass
            self._update_reclaim()

    def _on_lease_return(self, conn: Connection, msg: tuple) -> None:
        _, worker_id, kill = msg
        w = self.workers.get(worker_id)
        if w is None or w.owner is not conn:
            return
        if w.alloc is not None:
            self.resources.release(w.alloc)
            w.alloc = None
        w.owner = None
        w.blocked = False
        if kill:
            self._kill_worker(w)
        else:
            w.idle_since = time.monotonic()
            self.idle.append(worker_id)
        self._schedule()

    def _worker_of(self, conn: Connection) -> WorkerInfo | None:
        peer = conn.peer
        if peer and peer[0] == "worker":
            return self.workers.get(peer[1])
        return None

    def _on_blocked(self, conn: Connection, msg: tuple) -> None:
        w = self._worker_of(conn)
        if w is not None and w.alloc is not None and not w.blocked:
            w.blocked = True
            self.resources.release_cpus(w.alloc)
            self._schedule()

    def _on_unblocked(self, conn: Connection, msg: tuple) -> None:
        w = self._worker_of(conn)
        if w is not None and w.alloc is not None and w.blocked:
            w.blocked = False
            self.resources.reacquire_cpus(w.alloc)

    # --- objects ------------------------------------------------------------------------
    def _on_sealed(self, conn: Connection, msg: tuple) -> None:
        self.store.sealed(msg[1], msg[2])

    def _on_free(self, conn: Connection, msg: tuple) -> None:
        """An owner freed objects: drop this node's files, the copies other nodes pulled from
        here, and, for objects another node's store made (``origin``), that node's too."""
        hexids = msg[1]
        drop = self.store.forget if len(msg) > 2 and msg[2] else self.store.delete
        for hexid in hexids:
            drop(hexid)
        self.links.free_copies(hexids)
        origin = msg[3] if len(msg) > 3 else None
        if origin and origin != self.node_id:
            address = self.view.address_of(origin)
            if address is not None:
                self.links.notify_node(address, "free_objects", hexids)

    def notify_free_objects(self, conn: Connection, hexids: list[str]) -> None:
        self.rpc_free_objects(conn, hexids)

    def _on_pull(self, conn: Connection, msg: tuple) -> None:
        """Another node pulls an object of this node's store (see object_transfer.py)."""
        hexid = msg[1]

        def open_object(hexid: str) -> int:
            return os.open(self.store.restore(hexid), os.O_RDONLY)

        if len(msg) > 2:
            self.links.copied(hexid, msg[2])
        object_transfer.serve_pull(conn, open_object, hexid)

    def _pull_object(self, conn: Connection, req: int, source: str, hexid: str) -> None:
        """Copy object ``hexid`` from the node ``source`` (its id, or its ``tcp://`` address)
        into this node's store, on a thread; reply to ``req`` with the local path when it is
        sealed here (or with the error). Concurrent pulls of one object share the copy."""
        def reply(ok: bool, value: Any) -> None:
            try:
                conn.send((m.REPLY, req, ok, value))
            except ConnectionClosed:
                pass

        if self.store.contains(hexid):
            try:  # it may be spilled: back into shared memory, or read where it lies
                reply(True, self.store.restore(hexid))
            except (KeyError, OSError) as e:
                reply(False, KeyError(f"object {hexid} is gone from this node's store: {e}"))
            return
        address = source if "://" in source else self.view.address_of(source)
        if address is None:
            reply(False, KeyError(
                f"object {hexid} lives on node {source}, which is not an alive node of the "
                "cluster (it died or left), so the object is lost"))
            return
        waiting = self.pulling.get(hexid)
        if waiting is not None:
            waiting.append(reply)
            return
        waiting = self.pulling[hexid] = [reply]

        def finish(ok: bool, value: Any) -> None:
            for r in self.pulling.pop(hexid, waiting):
                r(ok, value)

        def run() -> None:
            # into shared memory; when it is full, into the spill directory, where the store
            # records the copy as spilled and readers map it
            shm_path = self.store.path_for(hexid)
            spill_path = os.path.join(self.store.spill_dir, os.path.basename(shm_path))
            try:
                for path in (shm_path, spill_path):
                    try:
                        size = object_transfer.pull(address, hexid, path, self.tcp_address or "",
                                                    token=self.token, tls=self.reactor.tls)
                        break
                    except OSError as e:
                        if path == spill_path or e.errno not in (errno.ENOSPC, errno.EDQUOT):
                            raise
            except Exception as e:  # noqa: BLE001 - travels back to the caller
                error = KeyError(f"pulling object {hexid} from node {source} failed: {e}")
                self.reactor.call_soon_threadsafe(lambda: finish(False, error))
                return

            def seal() -> None:
                self.store.sealed(hexid, size)
                finish(True, path)

            self.reactor.call_soon_threadsafe(seal)

        threading.Thread(target=run, name="quanta-object-pull", daemon=True).start()

    def rpc_free_objects(self, conn: Connection, hexids: list[str]) -> int:
        """Delete these objects' copies from this node's store (and the copies other nodes
        pulled from here). Returns how many it had."""
        had = [h for h in hexids if self.store.contains(h)]
        for hexid in had:
            self.store.delete(hexid)
        self.links.free_copies(hexids)
        return len(had)

    def rpc_restore_object(self, conn: Connection, hexid: str) -> str:
        return self.store.restore(hexid)

    def rpc_store_stats(self, conn: Connection) -> dict[str, int]:
        return self.store.stats()

    # --- control store ------------------------------------------------------------------
    def rpc_export_function(self, conn: Connection, fn_id: bytes, blob: bytes,
                            import_path: list[str]) -> None:
        self.control.export_function(fn_id, pickle.dumps((blob, import_path)))

    def rpc_get_function(self, conn: Connection, fn_id: bytes) -> tuple[bytes, list[str]]:
        return pickle.loads(self.control.get_function(fn_id))

    def _function_via_head(self, conn: Connection, req: int, method: str, args: tuple) -> None:
        """On a member node the head's control store holds the cluster's functions: an export
        is stored here and at the head (the reply waits for the head, so no worker of another
        node can miss it); a fetch this node lacks is asked of the head and kept."""
        control = self.control
        fn_id = args[0]
        if method == "get_function":
            try:
                blob: bytes | None = control.get_function(fn_id)
            except KeyError:
                blob = None
            if blob is not None:
                conn.send((m.REPLY, req, True, pickle.loads(blob)))
                return
        else:
            blob = pickle.dumps((args[1], args[2]))
            control.export_function(fn_id, blob)
        client = self.head_link.client

        def run() -> tuple[bool, Any]:
            if method == "export_function":
                client.export_function(fn_id, blob)
                return True, None
            found = client.get_function(fn_id)
            if found is None:
                return False, KeyError(f"function {fn_id.hex()} was never exported to this "
                                       "cluster")
            return True, found

        def done(ok: bool, value: Any) -> None:
            if ok and method == "get_function":
                control.export_function(fn_id, value)
                value = pickle.loads(value)
            try:
                conn.send((m.REPLY, req, ok, value))
            except ConnectionClosed:
                pass

        def thread() -> None:
            try:
                ok, value = run()
            except Exception as e:  # noqa: BLE001 - travels back to the caller
                ok, value = False, RuntimeError(f"{method}: the head did not answer: {e}")
            self.reactor.call_soon_threadsafe(lambda: done(ok, value))

        threading.Thread(target=thread, name="quanta-head-call", daemon=True).start()

    def notify_node_unreachable(self, conn: Connection, node_id: str) -> None:
        """A submitter could not reach that node's daemon: leave it out for a while."""
        self.view.mark_unreachable(node_id)

    def rpc_kv_put(self, conn, namespace, key, value, overwrite) -> bool:
        return self.control.kv_put(namespace, key, value, overwrite)

    def rpc_kv_get(self, conn, namespace, key) -> bytes | None:
        return self.control.kv_get(namespace, key)

    def rpc_kv_del(self, conn, namespace, key) -> bool:
        return self.control.kv_del(namespace, key)

    def rpc_kv_keys(self, conn, namespace, prefix) -> list[bytes]:
        return self.control.kv_keys(namespace, prefix)

    def rpc_nodes(self, conn: Connection) -> list[dict[str, Any]]:
        """This node first, then (on a cluster's head) every other node it knows, alive or
        dead, in Ray's ``nodes()`` shape."""
        out = [self.node_info()]
        if self.control_server is not None:
            for rec in self.membership.all():
                if rec["node_id"] != self.node_id:
                    out.append(_ray_node(rec))
        else:  # a member knows the alive nodes from the head's last answer
            for node in self.view.nodes.values():
                out.append(_ray_node({"node_id": node.node_id, "state": "ALIVE",
                                      "total": node.total.to_dict(),
                                      "node_address": node.address,
                                      "node_ip": node.node_ip}))
        return out

    def rpc_cluster_resources(self, conn: Connection) -> dict[str, float]:
        """Every alive node's resources, summed."""
        return (self.resources.total + self.view.totals()).to_dict()

    def rpc_available_resources(self, conn: Connection) -> dict[str, float]:
        return (self.resources.available + self.view.available()).to_dict()

    def pending_demands(self) -> list[dict[str, Any]]:
        """The lease requests waiting here (for resources, or for their placement group to
        be placed), counted by resource shape."""
        counts: dict[ResourceSet, int] = {}
        waiting = list(self.requests)
        for parked in self.group_leases.parked.values():
            waiting += parked
        for lr in waiting:
            counts[lr.resources] = counts.get(lr.resources, 0) + 1
        return [{"shape": shape.to_dict(), "count": n} for shape, n in counts.items()]

    def cluster_demands(self) -> list[dict[str, Any]]:
        """Every alive node's waiting lease requests, by shape (on a member, its own)."""
        if self.control_server is None:
            return self.pending_demands()
        counts: dict[tuple, int] = {}
        for rec in self.membership.reporting():
            demands = (self.pending_demands() if rec["node_id"] == self.node_id
                       else rec.get("pending") or [])
            for d in demands:
                key = tuple(sorted(d["shape"].items()))
                counts[key] = counts.get(key, 0) + int(d["count"])
        return [{"shape": dict(k), "count": n} for k, n in counts.items()]

    def rpc_status(self, conn: Connection) -> dict[str, Any]:
        return {
            "node": self.node_info(),
            "available": self.resources.available.to_dict(),
            "workers": len(self.workers),
            "idle_workers": len(self.idle),
            "pending_leases": [r.resources.to_dict() for r in self.requests],
            "pending_demands": self.cluster_demands(),
            "actors": self.actors.summary(),
            "infeasible_placement_groups": self.pgs.infeasible(),
            "pending_placement_groups": self.pgs.pending_groups(),
            "created_placement_groups": self.pgs.created_count(),
            "store": self.store.stats(),
            "jobs": self.control.jobs(),
        }

    # --- actors (the control store's actor table) -----------------------------------
    def rpc_register_actor(self, conn: Connection, info: dict[str, Any]) -> dict | None:
        return self.actors.register(conn, info)

    def notify_create_actor(self, conn: Connection, actor_id: str, creation: dict) -> None:
        self.actors.create(actor_id, creation)

    def notify_actor_ready(self, conn: Connection, actor_id: str, incarnation: int,
                           error: str | None, address: str = "", pid: int = 0) -> None:
        self.actors.ready(actor_id, incarnation, error, address, pid)

    # the cluster's actor manager (the head) and the nodes hosting its actors
    def rpc_actor_home(self, conn: Connection) -> str | None:
        """Where this node's processes send actor business: None for this daemon (a head,
        or a node alone), else the head's node address."""
        return self.head_node_address

    def notify_host_actor(self, conn: Connection, actor_id: str, creation: dict,
                          hold: dict, schedule: dict) -> None:
        if conn.peer == ("remote", None):
            conn.peer = ("home", None)
            conn.on_close.append(self.hosted.home_gone)
        self.hosted.host(conn, actor_id, creation, hold, schedule)

    def notify_hosted_actors(self, conn: Connection, node_id: str, node_address: str,
                             running: list) -> None:
        """A node that joined again reports the actors it runs (head)."""
        self.actors.adopt(node_id, node_address, running)

    def notify_kill_hosted_actor(self, conn: Connection, actor_id: str) -> None:
        self.hosted.kill(actor_id)

    def notify_hosted_actor_died(self, conn: Connection, actor_id: str,
                                 incarnation: int) -> None:
        self.actors.hosted_died(actor_id, incarnation)

    def notify_actor_exit(self, conn: Connection, actor_id: str, reason: str) -> None:
        self.actors.kill(actor_id, True, reason)

    def notify_actor_handles_gone(self, conn: Connection, actor_id: str) -> None:
        self.actors.kill(actor_id, True, "The actor died because all references to it were "
                         "removed (its last handle went out of scope and no call is pending).")

    def rpc_subscribe_actor(self, conn: Connection, actor_id: str) -> tuple:
        return self.actors.subscribe(conn, actor_id)

    def rpc_get_named_actor(self, conn: Connection, name: str, namespace: str) -> dict:
        return self.actors.get_named(name, namespace)

    def rpc_list_named_actors(self, conn: Connection, namespace: str | None) -> list:
        return self.actors.list_named(namespace)

    def rpc_list_actors(self, conn: Connection) -> list:
        return self.actors.list_actors()

    def rpc_kill_actor(self, conn: Connection, actor_id: str, no_restart: bool) -> None:
        reason = ("The actor died because it was killed by quanta.kill() (ray.kill) with "
                  "no_restart=True." if no_restart else
                  "The actor was killed by quanta.kill() (ray.kill) with no_restart=False.")
        self.actors.kill(actor_id, no_restart, reason)

    # --- placement groups ------------------------------------------------------------
    def rpc_create_placement_group(self, conn: Connection, info: dict[str, Any]) -> None:
        self.pgs.create(conn, info)

    def rpc_remove_placement_group(self, conn: Connection, pg_id: str) -> None:
        self.pgs.remove(pg_id)

    # one-way forms: calls that cannot fail for the caller need no round trip
    notify_create_placement_group = rpc_create_placement_group
    notify_remove_placement_group = rpc_remove_placement_group

    def rpc_get_named_placement_group(self, conn: Connection, name: str,
                                      namespace: str) -> dict[str, Any]:
        return self.pgs.get_named(name, namespace)

    def rpc_placement_group_table(self, conn: Connection, pg_id: str | None) -> dict:
        return self.pgs.table(pg_id)

    # the node's side of the two-phase reserve (node_bundles.py), asked by the head
    def rpc_prepare_bundles(self, conn: Connection, pg_id: str, attempt: int,
                            bundles: list) -> bool:
        return self.bundles.prepare(pg_id, attempt, bundles)

    def notify_commit_bundles(self, conn: Connection, pg_id: str, attempt: int) -> None:
        self.bundles.commit(pg_id, attempt)
        self._schedule()

    def notify_cancel_bundles(self, conn: Connection, pg_id: str, attempt: int) -> None:
        self.bundles.cancel(pg_id, attempt)
        self._schedule()

    def notify_release_bundles(self, conn: Connection, pg_id: str, why: str) -> None:
        self.bundles.release(pg_id, why)
        self._schedule()

    def notify_job_ended(self, conn: Connection, job_id: str) -> None:
        """A member's driver exited (head): its job is finished and its placement groups
        go."""
        try:
            self.control.finish_job(job_id)
        except Exception:  # noqa: BLE001 - bookkeeping only
            pass
        self.pgs.job_ended(job_id)

    def rpc_shutdown(self, conn: Connection) -> None:
        self.reactor.call_later(0, self.shutdown)

    # --- stop ---------------------------------------------------------------------------
    def shutdown(self, exit_code: int = 0) -> None:
        """Kill every worker, delete the store and the session directory, and exit."""
        if self.stopping:
            return
        self.stopping = True
        if self.head_link is not None:
            self.head_link.stop("its daemon was stopped")
        if self.control_server is not None:
            self.control_server.stop(0)
        try:  # first the zygote, so that no new worker appears
            os.kill(self.zygote_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for w in self.workers.values():
            self._kill_worker(w)
        # we exit below: free the descriptors the clean-up needs, even at the open-file limit
        self.reactor.release_descriptors()
        _kill_group_members()
        try:
            self.store.destroy()
        except Exception:  # noqa: BLE001 - best effort while exiting
            pass
        try:
            self.control.storage.close()
        except Exception:  # noqa: BLE001
            pass
        if self.args.cleanup_session:
            shutil.rmtree(self.session_dir, ignore_errors=True)
        os._exit(exit_code)

    # --- nodes started from the shell (``quanta start --head``) ---------------------------
    def _listen_node_port(self) -> None:
        """Listen on the node's TCP port. A head restarted on its storage with no port given
        takes the one it had, so that the addresses the surviving nodes and their processes
        hold for it (actors are managed there) stay right."""
        port = self.args.tcp_port
        if port == 0 and getattr(self.args, "tcp_port_auto", False) and self.args.control_port \
                is not None:
            saved = self.control.storage.get(HEAD_TABLE, b"node_port")
            if saved:
                try:
                    self.listen_tcp(int(saved))
                    return
                except OSError:
                    pass  # taken meanwhile: a new one
        self.listen_tcp(port)
        if self.args.control_port is not None:
            bound = self.tcp_address.rpartition(":")[2]
            self.control.storage.put(HEAD_TABLE, b"node_port", bound.encode())

    def listen_tcp(self, port: int) -> str:
        """Also accept clients on ``tcp://<node ip>:<port>`` (port 0 picks a free one).

        The Unix socket stays the local path; over TCP a client learns the node's Unix
        address and session directory from the ``nodes`` call. Returns the bound address."""
        self.tcp_address = self.reactor.listen(f"tcp://{self.args.node_ip}:{port}")
        return self.tcp_address

    def rpc_attach_driver(self, conn: Connection, job_id: str, worker_id: str,
                          address: str, object_prefix: str) -> None:
        """Called by a driver that connected to a running node (``init(address=...)``), after
        ``register_driver(..., primary=False)``. Such a node outlives its drivers, so what a
        driver leaves behind must go when its connection closes (it exited, crashed or was
        killed): its job is marked finished, the shared-memory objects it owned (their ids
        start with the driver's per-process ``object_prefix``, see ``ids.py``) and its
        recycled object files are deleted, and its socket file is removed."""
        conn.on_close.append(
            lambda c: self._driver_gone(job_id, worker_id, address, object_prefix))

    def _driver_gone(self, job_id: str, worker_id: str, address: str,
                     object_prefix: str) -> None:
        if self.stopping:
            return
        try:
            self.control.finish_job(job_id)
        except Exception:  # noqa: BLE001 - bookkeeping only
            pass
        prefix = object_prefix.lower()
        if len(prefix) >= 16:  # never an empty or short prefix: it would match others' objects
            for hexid in self.store.object_ids():
                if hexid.startswith(prefix):
                    self.store.delete(hexid)
        shm_dir = self.store.shm_dir
        try:
            names = os.listdir(shm_dir)
        except OSError:
            names = []
        for name in names:
            if name.startswith(f"recycled-{worker_id}-"):
                try:
                    os.unlink(os.path.join(shm_dir, name))
                except OSError:
                    pass
        self._remove_sockets(worker_id)


def _ray_node(rec: dict[str, Any]) -> dict[str, Any]:
    """A membership record in the shape ``nodes()`` returns (as ``NodeDaemon.node_info``)."""
    alive = rec["state"] == "ALIVE"
    return {
        "NodeID": rec["node_id"],
        "Alive": alive,
        "NodeManagerAddress": rec.get("node_ip", ""),
        "NodeManagerHostname": rec.get("hostname", ""),
        "NodeName": rec.get("node_ip", ""),
        "Resources": dict(rec.get("total") or {}) if alive else {},
        "DaemonAddress": rec.get("daemon_address", ""),
        "NodeAddress": rec.get("node_address", ""),
        "SessionDir": rec.get("session_dir", ""),
        "alive": alive,
        "DeathReason": rec.get("death_reason", ""),
    }


def _group_members() -> list[int]:
    """Other processes of this daemon's process group (its zygote and workers, also those
    whose pid it has not learnt yet)."""
    me = os.getpid()
    pgid = os.getpgid(0)
    if pgid != me:  # not a group of our own (a daemon run in the foreground): leave it
        return []
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            found.append(int(entry))
    return found


def _kill_group_members(timeout: float = 2.0) -> None:
    """SIGKILL the rest of the process group and wait (briefly) until they are gone, so that
    none binds a socket in the session directory after it is deleted."""
    deadline = time.monotonic() + timeout
    while True:
        pids = _group_members()
        if not pids or time.monotonic() > deadline:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="quanta-node-daemon")
    p.add_argument("--session-dir", required=True)
    p.add_argument("--num-cpus", type=float, required=True)
    p.add_argument("--num-gpus", type=float, default=0)
    p.add_argument("--memory", type=float, required=True)
    p.add_argument("--object-store-memory", type=float, required=True)
    p.add_argument("--resources", default="{}")
    p.add_argument("--num-prestart", type=int, default=None)
    p.add_argument("--storage", default="")
    p.add_argument("--shm-dir", default="/dev/shm")
    p.add_argument("--node-ip", default="127.0.0.1")
    p.add_argument("--ready-fd", type=int, default=None)
    p.add_argument("--cleanup-session", action="store_true")
    p.add_argument("--parent-death", action="store_true")
    p.add_argument("--tcp-port", type=int, default=None,
                   help="also listen on tcp://<node ip>:PORT for call-plane clients")
    p.add_argument("--control-port", type=int, default=None,
                   help="serve the control store over gRPC on <node ip>:PORT (the head)")
    p.add_argument("--head-address", default="",
                   help="join the cluster whose head serves its control store at HOST:PORT")
    p.add_argument("--tls-cert", default=None,
                   help="this node's certificate (PEM): TLS on the node port and gRPC port")
    p.add_argument("--tls-key", default=None, help="the certificate's private key (PEM, 0600)")
    p.add_argument("--tls-ca", default=None, help="the cluster's CA certificate (PEM)")
    args = p.parse_args(argv)
    try:
        args.tls = tls.configure(args.tls_cert, args.tls_key, args.tls_ca)
    except tls.TLSConfigError as e:
        print(f"quanta node daemon: {e}", file=sys.stderr, flush=True)
        if args.cleanup_session:
            shutil.rmtree(args.session_dir, ignore_errors=True)
        sys.exit(2)
    fd_limit.raise_soft_limit()
    if args.tcp_port is None and (args.control_port is not None or args.head_address):
        args.tcp_port = 0  # a node of a cluster: other nodes reach it over TCP
        args.tcp_port_auto = True
    # The cluster token (head: generated when absent; member: required) comes by environment.
    args.token = os.environ.pop("QUANTA_CLUSTER_TOKEN", None)
    if args.num_prestart is None:
        args.num_prestart = max(1, int(args.num_cpus))
    if args.parent_death:
        set_parent_death_signal(signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        daemon = NodeDaemon(args)
    except OSError as e:
        if args.tcp_port is None:
            raise
        print(f"quanta node daemon: cannot listen on tcp://{args.node_ip}:{args.tcp_port}: "
              f"{e}", file=sys.stderr, flush=True)
        _kill_group_members()  # the zygote, forked already
        shutil.rmtree(args.session_dir, ignore_errors=True)
        shutil.rmtree(os.path.join(args.shm_dir, f"quanta-{os.path.basename(args.session_dir)}"),
                      ignore_errors=True)
        sys.exit(1)
    signal.signal(signal.SIGTERM, lambda *a: daemon.shutdown())
    if args.control_port is not None:
        try:
            daemon.serve_control(args.control_port)
        except OSError as e:
            print(f"quanta node daemon: {e}", file=sys.stderr, flush=True)
            daemon.shutdown(1)
    if args.head_address:
        try:
            daemon.join(args.head_address, args.token or "")
        except RuntimeError as e:
            print(f"quanta node daemon: cannot join the cluster: {e}", file=sys.stderr,
                  flush=True)
            daemon.shutdown(1)
    if args.parent_death and os.getppid() == 1:
        daemon.shutdown()
    daemon.run(args.ready_fd)


if __name__ == "__main__":
    sys.exit(main())
