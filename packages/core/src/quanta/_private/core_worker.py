"""The core worker: what every Quanta process (driver or worker) uses to own objects, submit
tasks, and get, wait on and put values.

Design
------
*Ownership.* The process that creates an ObjectRef (by ``put`` or by submitting a task) owns
it. Its :class:`ObjectEntry` holds the value (inline bytes for small objects, a locator for
shared-memory ones), the count of local ObjectRef instances, the set of borrowers (other
processes holding it) and pins (tasks in flight that take it as an argument). The entry is
freed when all three are zero; a shared-memory object is then deleted from the node store.

*Borrowing.* A process that unpickles a ref it does not own becomes a borrower: it sends
``BORROW_ADD`` to the owner once, and ``BORROW_REMOVE`` when its last local instance goes.
Whoever passed the ref keeps it alive meanwhile: a submitter pins a task's argument refs until
the task is done, and the owner of a value keeps the refs nested in it alive as long as the
value. When the ref's owner is the very peer we received it from, the add travels on the same
connection as everything that could release it, so it is sent without waiting; otherwise it
is acknowledged before the value is used.

*Out-of-band refs.* A ref pickled outside Quanta's own serialization (``pickle.dumps(ref)``,
a function closure) cannot be tracked, so its object is pinned for the rest of the job (one
extra local count, as Ray does). A ref this process owns that is unpickled after its object
was freed gets a ReferenceCountingAssertionError as its value: ``get`` raises, never hangs.

*Daemon death.* A worker exits when its daemon connection closes. A driver instead fails
everything that waits on the daemon with LocalRayletDiedError (calls, lease requests, queued
and running tasks, actor calls, every object not ready) and from then on raises it from every
API call that needs the node; values already in its memory store stay readable, and
``shutdown()`` cleans up what the daemon left.

*Submission.* Tasks wait for their top-level ref arguments, then go on a queue per scheduling
key (resource shape and strategy). The submitter leases workers for a key from its node daemon
and pushes tasks straight to them, pipelining a few per worker once the daemon says no more
workers are free. A worker whose running task blocks in ``get`` hands its not-yet-started
tasks back (``REQUEUE``) so a child can never wait behind its parent; an idle lease steals
half of a busy sibling's backlog (``STEAL``). Idle leases linger briefly (sync call loops
reuse them) and go back when the daemon asks (``LEASE_RECLAIM``).

*Threads.* The reactor thread reads every connection and runs the message handlers; user
threads submit, get and put. Shared state is guarded by ``self.lock``; messages are sent from
whichever thread has them ready (``Connection.send`` is thread-safe). ``ObjectRef.__del__``
only appends to ``self.released`` (no lock: it can run inside any code during garbage
collection); the reactor drains it.
"""

from __future__ import annotations

import collections
import gc
import itertools
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from quanta import exceptions as exc
from quanta._private import ids, serialization, shm_store, worker_state
from quanta._private import messages as m
from quanta._private.actor_calls import HANDLE_SUFFIX, ActorCallsMixin
from quanta._private.transport import Connection, ConnectionClosed, Reactor, Waiter
from quanta.object_ref import ObjectRef, ObjectRefGenerator

logger = logging.getLogger("quanta")

INLINE_LIMIT = 100 * 1024
PIPELINE_DEPTH = int(os.environ.get("QUANTA_PIPELINE_DEPTH", "16"))
LEASE_LINGER_S = float(os.environ.get("QUANTA_LEASE_LINGER_S", "0.5"))
MAX_LEASE_REQUESTS = 64
# Freed shared-memory files that were never mapped are kept for reuse by the next large put.
RECYCLE_MIN = 1 << 20
RECYCLE_FILES = 2
RECYCLE_BYTES = int(os.environ.get("QUANTA_RECYCLE_BYTES", str(2 << 30)))


class ObjectEntry:
    """What this process knows of one object (owned or borrowed).

    Fields other than ``owned`` and ``owner`` default to class attributes, so making an entry
    (10,000 of them when a list of borrowed refs is unpickled) sets two attributes only.
    """

    value: tuple | None = None  # the ready value (inline bytes, shm locator or error)
    local = 0  # ObjectRef instances in this process
    borrowers: set[str] | None = None  # owned: processes that hold it
    pins = 0  # owned: tasks in flight that take it as an argument
    contained: list | None = None  # refs nested in the value, kept alive with it
    waiters: list[Callable[[], None]] | None = None
    producer: str | None = None  # worker holding refs nested in this return
    fetching = False
    gen_hold = False  # a generator item not yet taken by its consumer
    mapped: Any = None  # the ObjectView of a shared-memory value, shared by every get
    exposed = False  # its value was mapped or handed out: its file is never recycled
    lineage: TaskSpec | None = None  # owned task return in shared memory: the task, to rerun

    def __init__(self, owned: bool, owner: str) -> None:
        self.owned = owned
        self.owner = owner


class TaskSpec:
    """A task this process submitted and owns, from submission to completion."""

    __slots__ = (
        "task_id",
        "fn_id",
        "fn_name",
        "args",
        "arg_refs",
        "num_returns",
        "generator",
        "retries_left",
        "retry_exceptions",
        "resources",
        "key",
        "name",
        "pins",
        "deps_pending",
        "lease",
        "cancelled",
        "parent",
        "attempt",
        "actor",  # ActorState of an actor call, None for a task
        "method",
        "group",
        "incarnation",  # actor calls: the incarnation it was sent to, None while queued
        "lineage_pins",  # a finished task kept to rebuild its returns: the refs it pinned
        "pg",  # its placement group context (scheduling_strategies.group_context), or None
    )

    def wire(self, gpu_ids: list[int], resolved: list, job_id: str) -> tuple:
        return (
            self.task_id,
            self.fn_id,
            self.fn_name,
            self.args,
            resolved,
            self.num_returns,
            self.generator,
            self.name,
            gpu_ids,
            self.attempt,
            job_id,
            self.pg,
        )


class Lease:
    __slots__ = ("worker_id", "address", "conn", "key", "inflight", "gpu_ids", "idle_token",
                 "daemon")

    def __init__(self, worker_id, address, conn, key, gpu_ids, daemon):
        self.daemon = daemon  # the connection to the daemon that granted it
        self.worker_id = worker_id
        self.address = address
        self.conn = conn
        self.key = key
        self.inflight: dict[bytes, TaskSpec] = {}
        self.gpu_ids = gpu_ids
        self.idle_token = 0


class KeyState:
    """Submission state of one scheduling key."""

    __slots__ = ("queue", "leases", "requests", "requests_queued", "infeasible")

    def __init__(self) -> None:
        self.queue: collections.deque[TaskSpec] = collections.deque()
        self.leases: list[Lease] = []
        self.requests = 0  # lease requests sent, not answered with a grant or failure yet
        self.requests_queued = 0  # of those, how many the daemon said wait for capacity
        self.infeasible: str | None = None


class GeneratorState:
    __slots__ = ("produced", "done", "cond_waiters")

    def __init__(self) -> None:
        self.produced = 0
        self.done = False
        self.cond_waiters: list[Callable[[], None]] = []


class ArgRef:
    """Stands for a top-level ref argument inside a pickled argument list."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __reduce__(self):
        return (ArgRef, (self.index,))


class CoreWorker(ActorCallsMixin):
    """Owner-side runtime of one process. See the module docstring for the design."""

    def __init__(
        self,
        *,
        mode: str,
        session_dir: str,
        daemon_address: str,
        node_id: str,
        job_id: str,
        worker_id: str,
        store_dir: str,
    ) -> None:
        self.mode = mode
        self.session_dir = session_dir
        self.daemon_address = daemon_address
        self.node_id = node_id
        self.job_id = job_id
        self.worker_id = worker_id
        self.store_dir = store_dir
        self.lock = threading.RLock()
        self.objects: dict[bytes, ObjectEntry] = {}
        self.tasks: dict[bytes, TaskSpec] = {}
        self.keys: dict[Any, KeyState] = {}
        self.generators: dict[bytes, GeneratorState] = {}
        self.children: dict[bytes, list[bytes]] = {}  # parent task -> tasks it submitted
        self.released: collections.deque[bytes] = collections.deque()
        self.released_generators: collections.deque[bytes] = collections.deque()
        self.held: dict[bytes, list] = {}  # return id -> refs nested in it, kept for its owner
        self.peers: dict[str, Connection] = {}
        self.calls: dict[int, Callable[[bool, Any], None]] = {}
        self._req = itertools.count(1)
        self.exported: set[bytes] = set()
        self._removes: dict[str, list[bytes]] | None = None
        self._ready_listeners: list[Callable[[], None]] = []  # woken when any value is set
        self._pool: list[tuple[str, int]] = []  # recycled object files: (path, size)
        self._pool_seq = 0
        self.recycle_bytes = RECYCLE_BYTES
        self.functions: dict[bytes, Any] = {}
        self.actor_states: dict[str, Any] = {}  # actors this process calls (actor_calls.py)
        self.actor_id: str | None = None  # inside an actor's worker
        self.actor_incarnation = 0
        self.namespace = ""
        self.closed = False
        self.closing = False  # shutdown() has begun: the daemon going away is expected
        # Set when this driver's node daemon died (see _on_daemon_closed): every API call
        # that needs the daemon raises it (a fresh copy) from then on.
        self.daemon_error: exc.LocalRayletDiedError | None = None
        self.daemon_started_here = False  # init() started the daemon (no log file of its own)
        self._call_conns: dict[int, Connection] = {}  # call(): request -> its connection
        self.oob_pinned: set[bytes] = set()  # refs pickled out of band: kept for the job
        self.reclaim = False  # the daemon asks for idle leases back (requests are waiting)
        self.current_task_id: bytes | None = None  # set by the executor inside workers
        # the placement group the running task or actor is in (group_context), or None
        self.current_pg: tuple | None = None
        self.on_blocked: Callable[[bool], None] | None = None
        self.task_handler: Callable[[Connection, tuple], None] | None = None
        self.lease_requests: dict[int, list] = {}  # req -> [key, daemon conn, queued]
        self.reactor = Reactor(self._dispatch)
        self.sock_dir = sock_dir = os.path.join(session_dir, "sockets")
        os.makedirs(sock_dir, exist_ok=True)
        self.address = self.reactor.listen(
            f"unix://{os.path.join(sock_dir, worker_id + '.sock')}", self._on_accept
        )
        # Connections from other nodes, passed on by the node daemon (see transport.py).
        self.reactor.listen_handoff(os.path.join(sock_dir, worker_id + ".fds"),
                                    self._on_accept)
        self._route_prefix: str | None = None
        self.actor_home: str | None = None  # the head's node address, on a cluster member
        self.reactor.start_thread(f"quanta-{mode}-reactor")
        self.daemon = self.reactor.connect(daemon_address)
        # Refs that arrive through the daemon (actor constructor arguments) come from a third
        # party: their borrows are acknowledged by the owner before they are used.
        self.daemon.peer = daemon_address
        self.daemon.on_close.append(self._on_daemon_closed)
        self.daemon_pid = _peer_pid(self.daemon.sock)
        self.reactor.call_soon_threadsafe(self._tick)
        self._handlers = {
            m.REPLY: self._on_reply,
            m.HELLO: self._on_hello,
            m.TASK_DONE: self._on_task_done,
            m.GEN_ITEM: self._on_gen_item,
            m.REQUEUE: self._on_requeue,
            m.GET_OBJECT: self._on_get_object,
            m.OBJECT_LOST: self._on_object_lost,
            m.OBJECT_VALUE: self._on_object_value,
            m.BORROW_ADD: self._on_borrow_add,
            m.BORROW_REMOVE: self._on_borrow_remove,
            m.BORROW_ACK: self._on_borrow_ack,
            m.RELEASE_HELD: self._on_release_held,
            m.LEASE_GRANT: self._on_lease_grant,
            m.LEASE_FAIL: self._on_lease_fail,
            m.LEASE_CANCELLED: self._on_lease_cancelled,
            m.LEASE_SPILL: self._on_lease_spill,
            m.LEASE_RECLAIM: self._on_lease_reclaim,
            m.CALL: self._on_call,
            m.ACTOR_STATE: self._on_actor_state,
        }

    # ================================================================================
    # plumbing
    # ================================================================================
    def _dispatch(self, conn: Connection, msg: tuple) -> None:
        handler = self._handlers.get(msg[0])
        if handler is not None:
            handler(conn, msg)
        elif self.task_handler is not None:
            self.task_handler(conn, msg)
        if self.released:
            self._drain_released()

    def _tick(self) -> None:
        if self.released or self.released_generators:
            self._drain_released()
        if not self.closed:
            self.reactor.call_later(0.05, self._tick)

    def _on_accept(self, conn: Connection) -> None:
        pass  # the peer introduces itself with HELLO

    def _on_hello(self, conn: Connection, msg: tuple) -> None:
        conn.peer = msg[1]
        old = self.peers.get(msg[1])
        if old is None or old.closed:
            self.peers[msg[1]] = conn
        conn.on_close.append(self._on_peer_closed)

    def join_cluster(self, address: str) -> None:
        """Be known as ``address`` (``tcp://<node>/<id>``, routed through this node's TCP
        port) from now on. Called right after registering, before anything is owned.
        Asks the daemon for the cluster token, which every TCP connection presents, and its
        TLS settings."""
        self.address = address
        self._route_prefix = address[: address.rindex("/") + 1]
        from quanta._private import tls  # the node's TLS files, when it uses TLS

        token, tls_paths = self.call_daemon("cluster_credentials", timeout=30)
        self.reactor.token, self.reactor.tls = token, tls.load(tls_paths)

    def peer(self, address: str) -> Connection:
        """The one connection to the process listening at ``address``; opened on first use.
        A process of this node is reached over its Unix socket even when its address is
        routed through the node's TCP port."""
        conn = self.peers.get(address)
        if conn is not None and not conn.closed:
            return conn
        with self.lock:
            conn = self.peers.get(address)
            if conn is not None and not conn.closed:
                return conn
            target = address
            prefix = self._route_prefix
            if prefix is not None and address.startswith(prefix):
                target = f"unix://{os.path.join(self.sock_dir, address[len(prefix):])}.sock"
            conn = self.reactor.connect(target)
            conn.peer = address
            conn.on_close.append(self._on_peer_closed)
            self.peers[address] = conn
            conn.send((m.HELLO, self.address))
            return conn

    def _on_peer_closed(self, conn: Connection) -> None:
        if (self.mode == "driver" and not self.daemon.closed and not self.closing
                and _at_eof(self.daemon.sock)):
            # A worker died because its daemon did (it exits when the daemon goes): handle
            # the daemon's death first, so its tasks fail with that, not as crashed workers.
            self.daemon.close()
        if self.peers.get(conn.peer) is conn:
            del self.peers[conn.peer]
        dead = conn.peer
        # Tasks in flight on a worker behind this connection
        with self.lock:
            self._lease_requests_lost(conn)
            for ks in self.keys.values():
                for lease in list(ks.leases):
                    if lease.conn is conn:
                        self._lease_lost(ks, lease)
            # objects we borrowed from a dead owner
            for oid, entry in list(self.objects.items()):
                if not entry.owned and entry.owner == dead and entry.value is None:
                    self._set_value(
                        oid, entry, _error_value(exc.OwnerDiedError(
                            oid.hex(), f"The owner of object {oid.hex()} ({dead}) died, "
                            "so the object is lost.")))
                elif entry.owned and entry.borrowers and dead in entry.borrowers:
                    entry.borrowers.discard(dead)
                    self._maybe_free(oid, entry)

    def _on_daemon_closed(self, conn: Connection) -> None:
        if self.closed or self.closing:
            return
        if self.mode == "worker":
            os._exit(0)
        self._daemon_died(conn)

    # ---- the driver's node daemon died --------------------------------------------------
    def _daemon_died_message(self) -> str:
        pid = f" (pid {self.daemon_pid})" if self.daemon_pid else ""
        log = os.path.join(self.session_dir, "logs", "daemon.log")
        if not self.daemon_started_here and os.path.exists(log):
            where = f"Its log is {log}."
        elif self.daemon_started_here:
            left = ("was left behind (the daemon was killed, so it could not clean up; "
                    "shutdown() deletes it)" if os.path.isdir(self.session_dir) else "is gone")
            where = (f"It was started by init() and wrote its output to this driver's "
                     f"stderr; its session directory {self.session_dir} {left}.")
        else:
            where = f"Its session directory {self.session_dir} is gone (no log left)."
        return (f"The node daemon{pid} at {self.daemon_address} that this driver is "
                f"connected to died (it was killed or exited): the tasks, actors and objects "
                f"it held are lost, and this driver cannot run anything more. {where} Call "
                f"quanta.shutdown(), then quanta.init() to start over.")

    def raise_daemon_died(self) -> None:
        """Raise the daemon's death (a fresh error each time, so tracebacks do not pile up)."""
        err = self.daemon_error
        raise exc.LocalRayletDiedError(str(err) if err is not None
                                       else self._daemon_died_message())

    def _daemon_died(self, conn: Connection) -> None:
        """The driver's daemon connection closed while the driver runs: the node is gone
        (its workers die with it). Fail everything that waits on it: calls to the daemon,
        lease requests, queued and running tasks, actor calls, and every object not ready
        (so every get and wait wakes up with the error). Values already in this process stay
        readable. Reactor thread."""
        err = exc.LocalRayletDiedError(self._daemon_died_message())
        self.daemon_error = err
        logger.error("%s", err)
        errv = _error_value(err)
        with self.lock:
            for req, c in list(self._call_conns.items()):
                if c is conn:
                    cb = self.calls.pop(req, None)
                    if cb is not None:
                        cb(False, exc.LocalRayletDiedError(str(err)))
            for req in self.lease_requests:
                self.calls.pop(req, None)
            self.lease_requests.clear()
            for ks in self.keys.values():
                ks.queue.clear()
                ks.requests = ks.requests_queued = 0
                for lease in ks.leases:
                    lease.inflight.clear()
                ks.leases.clear()
            for st in self.actor_states.values():
                st.queue.clear()
                st.inflight.clear()
                st.state = "DEAD"
                st.reason = str(err)
                st.conn = None
            for spec in list(self.tasks.values()):
                spec.cancelled = True  # never dispatched again (an argument may wake it)
                spec.lease = None
                self._fail_task(spec, errv)
            for oid, entry in list(self.objects.items()):
                if entry.value is None and self.objects.get(oid) is entry:
                    entry.fetching = False
                    self._set_value(oid, entry, errv)
            if self._ready_listeners:  # wait() on many refs: let it rescan
                listeners, self._ready_listeners = self._ready_listeners, []
                for wake in listeners:
                    wake()

    def call(self, conn: Connection, method: str, *args: Any, timeout: float | None = 60) -> Any:
        """Send a CALL and wait for its REPLY. Never from the reactor thread. A call to a
        daemon that died raises LocalRayletDiedError (at once, or when the death is seen)."""
        daemon = conn is self.daemon
        if daemon and self.daemon_error is not None:
            self.raise_daemon_died()
        waiter = Waiter()
        req = next(self._req)
        box: list = []

        def done(ok: bool, result: Any) -> None:
            box.append((ok, result))
            waiter.set()

        self.calls[req] = done
        self._call_conns[req] = conn
        try:
            try:
                conn.send((m.CALL, req, method, args))
            except ConnectionClosed:
                self.calls.pop(req, None)
                if daemon and self.mode == "driver":
                    self.raise_daemon_died()
                raise
            if not self.reactor.run_until(waiter, timeout):
                self.calls.pop(req, None)
                if daemon and self.daemon_error is not None:
                    self.raise_daemon_died()
                raise TimeoutError(f"no reply to {method!r} within {timeout} s")
        finally:
            self._call_conns.pop(req, None)
        ok, result = box[0]
        if not ok:
            raise result
        return result

    def current_namespace(self) -> str:
        """The namespace of the job this process works for (named actors live in one)."""
        if self.namespace:
            return self.namespace
        cache = self.__dict__.setdefault("_job_namespaces", {})
        ns = cache.get(self.job_id)
        if ns is None:
            ns = cache[self.job_id] = self.call_actor_manager("job_namespace", self.job_id)
        return ns

    def placement_group_ready(self, pg: Any) -> ObjectRef:
        """A ref set to ``pg`` once the daemon reports it reserved (an error if removed)."""
        oid = ids.new_put_id()
        entry = ObjectEntry(True, self.address)
        entry.local = 1
        with self.lock:
            self.objects[oid] = entry
        ref = ObjectRef(oid, self.address, self)

        def done(ok: bool, created: Any) -> None:
            if ok and created is True:
                value = (m.VALUE_INLINE, serialization.serialize(pg).payload, None)
            else:
                value = _error_value(exc.RayError(
                    f"The placement group {pg.id.hex()} was removed before it was ready."))
            with self.lock:
                if self.objects.get(oid) is entry:
                    self._set_value(oid, entry, value)

        req = next(self._req)
        self.calls[req] = done
        self.send_actor_manager((m.CALL, req, "wait_placement_group", (pg.id.hex(),)))
        return ref

    def wait_placement_group(self, pg_id: str, timeout: float) -> bool:
        try:
            return bool(self.call_actor_manager("wait_placement_group", pg_id,
                                                timeout=timeout))
        except TimeoutError:
            return False

    def actor_conn(self) -> Connection:
        """The connection to the daemon that manages actors and placement groups: this
        node's, or on a member of a cluster the head's (opened on first use)."""
        if self.actor_home is None:
            return self.daemon
        return self.peer(self.actor_home)

    def call_actor_manager(self, method: str, *args: Any, timeout: float | None = 60) -> Any:
        return self.call(self.actor_conn(), method, *args, timeout=timeout)

    def send_actor_manager(self, msg: tuple) -> None:
        try:
            self.actor_conn().send(msg)
        except (OSError, ConnectionClosed):
            pass

    def notify_daemon(self, method: str, *args: Any) -> None:
        """A one-way request to the node daemon (ordered with this process's later calls)."""
        self._send_daemon((m.NOTIFY, method, args))

    def call_daemon(self, method: str, *args: Any, timeout: float | None = 60) -> Any:
        return self.call(self.daemon, method, *args, timeout=timeout)

    def _on_reply(self, conn: Connection, msg: tuple) -> None:
        cb = self.calls.pop(msg[1], None)
        if cb is not None:
            cb(msg[2], msg[3])

    def _on_call(self, conn: Connection, msg: tuple) -> None:
        _, req, method, args = msg
        try:
            result = getattr(self, "rpc_" + method)(*args)
            conn.send((m.REPLY, req, True, result))
        except Exception as e:  # noqa: BLE001 - errors travel back to the caller
            conn.send((m.REPLY, req, False, e))

    # ================================================================================
    # reference counting
    # ================================================================================
    def end_decode(self, batch: dict[str, list[bytes]]) -> None:
        """Close a decode batch (see ``_Source.start_batch``): count the refs it rebuilt, all
        under one lock, then send the borrow registrations it collected."""
        refs = _source._local.refs
        if refs:
            objects = self.objects
            with self.lock:
                for ref in refs:
                    oid = ref._id
                    entry = objects.get(oid)
                    if entry is None:
                        owner = ref._owner
                        entry = objects[oid] = ObjectEntry(owner == self.address, owner)
                        if entry.owned:
                            self._freed_owned(oid, entry)
                        else:
                            self._register_borrow(oid, owner)  # into ``batch``
                    entry.local += 1
                    ref._cw = self
        _source.end_batch(batch)
        if batch:
            self._send_borrow_adds(batch)

    def deserialize_ref(self, oid: bytes, owner: str) -> ObjectRef:
        """Called while unpickling a ref: count it, and register as a borrower if need be."""
        with self.lock:
            entry = self.objects.get(oid)
            if entry is None:
                entry = ObjectEntry(owner == self.address, owner)
                self.objects[oid] = entry
                if entry.owned:
                    self._freed_owned(oid, entry)
                else:
                    entry.local = 1
                    ref = ObjectRef(oid, owner, self)
                    self._register_borrow(oid, owner)
                    return ref
            entry.local += 1
        return ObjectRef(oid, owner, self)

    def _freed_owned(self, oid: bytes, entry: ObjectEntry) -> None:
        """A ref this process owns was unpickled after its object was freed here (it was
        pickled outside Quanta, and unpickled in its owner, or its pin was lost): its value
        is gone for good, so ``get`` raises at once instead of waiting. Lock held."""
        if oid[16:] == HANDLE_SUFFIX:
            return
        entry.value = _error_value(exc.ReferenceCountingAssertionError(
            oid.hex(), f"Object {oid.hex()} was already freed by its owner (this process, "
            f"{self.address}) when this ref to it was unpickled: its value is gone. Keep "
            "a ref alive while a pickled copy of it is out."))

    def pin_out_of_band(self, oid: bytes) -> None:
        """A ref is pickled outside Quanta's own serialization (``pickle.dumps(ref)``,
        ``cloudpickle.dumps``, a function closure): nothing can tell when the copy is
        unpickled, so the object is kept for the rest of the job, as Ray does (owned: never
        freed; borrowed: the borrow is never given back)."""
        with self.lock:
            if oid in self.oob_pinned:
                return
            entry = self.objects.get(oid)
            if entry is None:
                return
            self.oob_pinned.add(oid)
            entry.local += 1
            entry.exposed = True

    def _register_borrow(self, oid: bytes, owner: str) -> None:
        local = _source._local
        batch = getattr(local, "batch", None)
        if batch is not None:
            source = getattr(local, "v", None)
            if source is None or source == owner:  # the common case while unpickling
                try:
                    batch[owner].append(oid)
                except KeyError:
                    batch[owner] = [oid]
                return
        source = _source.get()
        if source is None or source == owner or self.reactor.is_leader():
            batch = _source.batch()
            if batch is not None:
                batch.setdefault(owner, []).append(oid)
                return
            self._send_borrow_adds({owner: [oid]})
            return
        try:
            conn = self.peer(owner)
        except OSError:
            return  # owner gone: get() will report OwnerDiedError
        waiter = Waiter()
        req = next(self._req)
        self.calls[req] = lambda ok, res: waiter.set()
        conn.send((m.BORROW_ADD, [oid], req))
        if not self.reactor.run_until(waiter, 10):  # an unreachable owner surfaces on get()
            self.calls.pop(req, None)

    def _send_borrow_adds(self, batch: dict[str, list[bytes]]) -> None:
        for owner, oids in batch.items():
            try:
                self.peer(owner).send((m.BORROW_ADD, oids, 0))
            except (OSError, ConnectionClosed):
                pass  # owner gone: get() will report OwnerDiedError

    def _drain_released(self) -> None:
        released = self.released
        with self.lock:
            self._removes = {}
            while released:
                oid = released.popleft()
                entry = self.objects.get(oid)
                if entry is None:
                    continue
                entry.local -= 1
                if entry.local <= 0:
                    self._maybe_free(oid, entry)
            gens = self.released_generators
            while gens:
                self._drop_generator(gens.popleft())
            removes, self._removes = self._removes, None
        for owner, oids in removes.items():
            conn = self.peers.get(owner)
            if conn is not None:
                try:
                    conn.send((m.BORROW_REMOVE, oids))
                except ConnectionClosed:
                    pass

    def _maybe_free(self, oid: bytes, entry: ObjectEntry) -> None:
        """Free ``entry`` if nothing references it any more. Lock held."""
        if entry.local > 0 or entry.pins > 0 or entry.borrowers or entry.gen_hold:
            return
        if entry.waiters:
            return
        del self.objects[oid]
        if not entry.owned:
            if self._removes is not None:
                self._removes.setdefault(entry.owner, []).append(oid)
                return
            conn = self.peers.get(entry.owner)
            if conn is not None:
                try:
                    conn.send((m.BORROW_REMOVE, [oid]))
                except ConnectionClosed:
                    pass
            return
        if oid[16:] == HANDLE_SUFFIX:
            self._actor_handles_gone(oid)
            return
        value = entry.value
        if value is not None and value[0] == m.VALUE_SHM:
            if value[2] == self.node_id:
                recycled = not entry.exposed and self._recycle(oid, value[1])
                self._send_daemon((m.OBJECT_FREE, [oid.hex()], recycled))
            else:  # made on another node: its store and every copy go
                self._send_daemon((m.OBJECT_FREE, [oid.hex()], False, value[2]))
        if entry.producer is not None:
            conn = self.peers.get(entry.producer)
            if conn is not None:
                try:
                    conn.send((m.RELEASE_HELD, [oid]))
                except ConnectionClosed:
                    pass
        entry.contained = None  # nested refs go with the value

    def _recycle(self, oid: bytes, size: int) -> bool:
        """Keep the file of a freed object that nobody ever mapped, for the next large put.
        Lock held. Returns True if the file was taken."""
        if size < RECYCLE_MIN or len(self._pool) >= RECYCLE_FILES:
            return False
        if sum(s for _, s in self._pool) + size > self.recycle_bytes:
            return False
        self._pool_seq += 1
        target = os.path.join(self.store_dir, f"recycled-{self.worker_id}-{self._pool_seq}")
        try:
            os.rename(os.path.join(self.store_dir, shm_store.object_file_name(oid.hex())),
                      target)
        except OSError:
            return False  # spilled or gone: nothing to recycle
        self._pool.append((target, size))
        return True

    def _take_recycled(self, size: int) -> str | None:
        if size < RECYCLE_MIN or not self._pool:
            return None
        with self.lock:
            if not self._pool:
                return None
            best = min(range(len(self._pool)), key=lambda i: abs(self._pool[i][1] - size))
            return self._pool.pop(best)[0]

    def _send_daemon(self, msg: tuple) -> None:
        try:
            self.daemon.send(msg)
        except ConnectionClosed:
            pass

    def _on_borrow_add(self, conn: Connection, msg: tuple) -> None:
        with self.lock:
            for oid in msg[1]:
                entry = self.objects.get(oid)
                if entry is None or not entry.owned:
                    continue
                entry.exposed = True
                if entry.borrowers is None:
                    entry.borrowers = set()
                entry.borrowers.add(conn.peer)
        if msg[2]:
            conn.send((m.BORROW_ACK, msg[2]))

    def _on_borrow_ack(self, conn: Connection, msg: tuple) -> None:
        cb = self.calls.pop(msg[1], None)
        if cb is not None:
            cb(True, None)

    def _on_borrow_remove(self, conn: Connection, msg: tuple) -> None:
        with self.lock:
            for oid in msg[1]:
                entry = self.objects.get(oid)
                if entry is None or not entry.borrowers:
                    continue
                entry.borrowers.discard(conn.peer)
                self._maybe_free(oid, entry)

    def _on_release_held(self, conn: Connection, msg: tuple) -> None:
        for oid in msg[1]:
            self.held.pop(oid, None)

    # ================================================================================
    # values
    # ================================================================================
    def _set_value(self, oid: bytes, entry: ObjectEntry, value: tuple) -> None:
        """Store a ready value and wake its waiters. Lock held."""
        entry.value = value
        if self._ready_listeners:
            listeners, self._ready_listeners = self._ready_listeners, []
            for wake in listeners:
                wake()
        waiters = entry.waiters
        if waiters:
            entry.waiters = None
            for w in waiters:
                w()
            self._maybe_free(oid, entry)

    def encode_value(self, oid: bytes, value: Any) -> tuple[tuple, list]:
        """Serialize ``value`` as the object ``oid``: inline if small, else into the node's
        shared-memory store. Returns (return_value tuple, contained refs)."""
        ser = serialization.serialize(value)
        return self._place(oid, ser), ser.contained

    def _place(self, oid: bytes, ser: serialization.SerializedObject) -> tuple:
        if ser.size < INLINE_LIMIT:
            bufs = [b.raw().tobytes() for b in ser.buffers] if ser.buffers else None
            return (m.VALUE_INLINE, ser.payload, bufs)
        hexid = oid.hex()
        path = os.path.join(self.store_dir, shm_store.object_file_name(hexid))
        size = shm_store.write_object(path, b"", ser.payload, ser.buffers,
                                      reuse=self._take_recycled(ser.size),
                                      spill_dir=os.path.join(self.session_dir, "spill"))
        self._send_daemon((m.OBJECT_SEALED, hexid, size))
        return (m.VALUE_SHM, size, self.node_id)

    def decode_value(self, oid: bytes, value: tuple, source: str | None) -> Any:
        """Turn a stored value into a Python object (raises the stored error)."""
        kind = value[0]
        token = _source.set(source)
        batch = _source.start_batch()
        try:
            if kind == m.VALUE_INLINE:
                return serialization.deserialize(value[1], value[2])
            if kind == m.VALUE_SHM:
                entry = self.objects.get(oid)
                view = entry.mapped if entry is not None else None
                if entry is not None:
                    entry.exposed = True
                if view is None:
                    view = self._map_shm(oid, value[2])
                    if entry is not None:
                        entry.mapped = view
                # A big pickle can hold many objects (10,000 refs, say): the cyclic GC would
                # rescan them over and over while they are built, so it pauses for the load.
                pause = gc.isenabled()
                if pause:
                    gc.disable()
                try:
                    return serialization.deserialize(view.payload, view.buffers)
                finally:
                    if pause:
                        gc.enable()
            err = serialization.deserialize(value[1])
        finally:
            self.end_decode(batch)  # while the source is still set: it decides acks
            _source.reset(token)
        if isinstance(err, exc.RayTaskError):
            raise err.as_instanceof_cause()
        raise err

    def _map_shm(self, oid: bytes, origin: str):
        """Map the shared-memory object ``oid`` of this node's store: restored by the daemon
        when it was spilled, pulled from node ``origin`` (whose store made it) when this node
        has no copy."""
        hexid = oid.hex()
        path = os.path.join(self.store_dir, shm_store.object_file_name(hexid))
        try:
            return shm_store.read_object(path)
        except FileNotFoundError:
            pass
        try:
            if origin != self.node_id:
                path = self.call_daemon("pull_object", origin, hexid, timeout=None)
            else:
                path = self.call_daemon("restore_object", hexid)
        except KeyError as e:
            raise exc.ObjectLostError(
                hexid, f"Object {hexid} is not in the node's store any more: {e}"
            ) from None
        return shm_store.read_object(path)

    def put(self, value: Any) -> ObjectRef:
        if isinstance(value, ObjectRef):
            raise TypeError(
                "put() of an ObjectRef is not allowed: pass the ref itself, or get() it first."
            )
        if self.daemon_error is not None:
            self.raise_daemon_died()
        oid = ids.new_put_id()
        ser = serialization.serialize(value)
        placed = self._place(oid, ser)
        entry = ObjectEntry(True, self.address)
        entry.value = placed
        entry.local = 1
        if ser.contained:
            entry.contained = ser.contained
        with self.lock:
            self.objects[oid] = entry
        return ObjectRef(oid, self.address, self)

    # ---- waiting ------------------------------------------------------------------------
    def _ensure_fetch(self, oid: bytes, entry: ObjectEntry) -> None:
        """Ask the owner of a borrowed object for its value. Lock held."""
        if entry.owned or entry.fetching or entry.value is not None:
            return
        entry.fetching = True
        req = next(self._req)
        self.calls[req] = lambda ok, value, oid=oid: self._fetched(oid, value)
        try:
            self.peer(entry.owner).send((m.GET_OBJECT, req, oid))
        except (OSError, ConnectionClosed):
            self.calls.pop(req, None)
            self._set_value(oid, entry, _error_value(exc.OwnerDiedError(
                oid.hex(), f"The owner of object {oid.hex()} ({entry.owner}) is unreachable; "
                "it has died, so the object is lost.")))

    def _fetched(self, oid: bytes, value: tuple) -> None:
        with self.lock:
            entry = self.objects.get(oid)
            if entry is not None:
                entry.fetching = False
                self._set_value(oid, entry, value)

    def _on_object_value(self, conn: Connection, msg: tuple) -> None:
        cb = self.calls.pop(msg[1], None)
        if cb is not None:
            cb(True, msg[2])

    def _on_get_object(self, conn: Connection, msg: tuple) -> None:
        _, req, oid = msg
        with self.lock:
            entry = self.objects.get(oid)
            if entry is None:
                value = _error_value(exc.ObjectLostError(
                    oid.hex(), f"Object {oid.hex()} was already freed by its owner "
                    f"({self.address}); it is no longer referenced there."))
            elif entry.value is None:
                def send(entry=entry, conn=conn, req=req):
                    try:
                        conn.send((m.OBJECT_VALUE, req, entry.value))
                    except ConnectionClosed:
                        pass
                entry.waiters = (entry.waiters or []) + [send]
                return
            else:
                value = entry.value
            if entry is not None:
                entry.exposed = True
        conn.send((m.OBJECT_VALUE, req, value))

    def _wait_ready(self, oids: Sequence[bytes], num: int, timeout: float | None,
                    fetch: bool = True) -> set[bytes]:
        """Block until ``num`` of ``oids`` have values (or timeout). Returns the ready set."""
        ready: set[bytes] = set()
        event = Waiter()
        counter = [0]
        callbacks: list = []
        with self.lock:
            pending = []
            for oid in oids:
                entry = self.objects.get(oid)
                if entry is None:
                    raise exc.ReferenceCountingAssertionError(
                        oid.hex(), f"Object {oid.hex()} is unknown here (freed already).")
                if entry.value is not None:
                    ready.add(oid)
                else:
                    pending.append((oid, entry))
            if len(ready) >= num:
                return ready
            if self.daemon_error is not None:
                self.raise_daemon_died()
            needed = num - len(ready)

            for oid, entry in pending:
                def cb(oid=oid):
                    ready.add(oid)
                    counter[0] += 1
                    if counter[0] >= needed:
                        event.set()
                callbacks.append(cb)
                entry.waiters = (entry.waiters or []) + [cb]
                if fetch:
                    self._ensure_fetch(oid, entry)
        blocked = self.on_blocked is not None and self.current_task_id is not None
        if blocked:
            self.on_blocked(True)
        try:
            self.reactor.run_until(event, timeout)
        finally:
            if blocked:
                self.on_blocked(False)
            with self.lock:
                mine = set(map(id, callbacks))
                for oid, entry in pending:
                    if entry.waiters:
                        entry.waiters = [w for w in entry.waiters if id(w) not in mine]
                        if not entry.waiters:
                            entry.waiters = None
                            self._maybe_free(oid, entry)
        if self.daemon_error is not None:
            self.raise_daemon_died()
        return set(ready)

    def get(self, refs: Sequence[ObjectRef], timeout: float | None,
            _lost_retries: int = 0) -> list[Any]:
        oids = [r._id for r in refs]
        with self.lock:
            missing = False
            for oid in oids:
                entry = self.objects.get(oid)
                if entry is None or entry.value is None:
                    missing = True
                    break
        if missing:
            unique = list(dict.fromkeys(oids))
            ready = self._wait_ready(unique, len(unique), timeout)
            if len(ready) < len(unique):
                raise exc.GetTimeoutError(
                    f"get() timed out after {timeout} s: {len(unique) - len(ready)} of "
                    f"{len(unique)} objects were not ready."
                )
        out = []
        objects = self.objects
        for ref in refs:
            entry = objects[ref._id]
            try:
                out.append(self.decode_value(ref._id, entry.value,
                                             None if entry.owned else entry.owner))
            except exc.ObjectLostError as e:
                if type(e) is not exc.ObjectLostError or _lost_retries >= 3:
                    raise
                if entry.owned:
                    if entry.lineage is None:
                        raise
                    self._reconstruct(ref._id, e)
                else:
                    self.report_lost(ref._id, entry.owner, entry.value, e)
                return self.get(refs, timeout, _lost_retries + 1)
        return out

    def report_lost(self, oid: bytes, owner: str, value: tuple,
                    lost: exc.ObjectLostError) -> None:
        """A borrowed shared-memory value could not be read (every copy is gone): tell its
        owner, which rebuilds it or records the loss, and forget the value here so the next
        get asks the owner again (on the same connection, after this report)."""
        with self.lock:
            entry = self.objects.get(oid)
            if entry is not None and not entry.owned:
                entry.value = None
                entry.mapped = None
                entry.fetching = False
        try:
            self.peer(owner).send((m.OBJECT_LOST, oid, value[2], str(lost)))
        except (OSError, ConnectionClosed):
            pass

    def _on_object_lost(self, conn: Connection, msg: tuple) -> None:
        """A borrower could not read an object this process owns: rebuild it from its lineage,
        or make the loss its value so every reader gets the reason."""
        _, oid, origin, reason = msg
        with self.lock:
            entry = self.objects.get(oid)
            value = entry.value if entry is not None and entry.owned else None
            if value is None or value[0] != m.VALUE_SHM or value[2] != origin:
                return  # freed, being rebuilt, or rebuilt already
        lost = exc.ObjectLostError(oid.hex(), reason)
        try:
            if entry.lineage is None:
                raise exc.ObjectLostError(oid.hex(), f"{reason} It cannot be rebuilt: it was "
                                          "made by put(), or by a task with no retries.")
            self._reconstruct(oid, lost)
        except exc.ObjectLostError as e:
            with self.lock:
                if entry.value is value:
                    entry.value = None
                    entry.mapped = None
                    self._set_value(oid, entry, _error_value(e))

    def _reconstruct(self, oid: bytes, lost: exc.ObjectLostError) -> None:
        """Run again the task that made the owned object ``oid``, whose every copy is gone
        (``lost`` says how); its returns are set anew when it finishes. Raises
        ObjectReconstructionFailedError when it cannot run again."""
        with self.lock:
            entry = self.objects[oid]
            spec = entry.lineage
            if spec.task_id in self.tasks:
                return  # already running again (another get found the loss first)
            hexid = oid.hex()
            if spec.retries_left == 0:
                raise exc.ObjectReconstructionFailedMaxAttemptsExceededError(
                    hexid, f"{lost} It cannot be rebuilt: the task {spec.fn_name} that made "
                    "it has no retries left (max_retries) to run again.")
            gone = [r._id.hex() for r in spec.arg_refs if r._id not in self.objects]
            if gone:
                raise exc.ObjectReconstructionFailedError(
                    hexid, f"{lost} It cannot be rebuilt: the arguments {gone} of the task "
                    f"{spec.fn_name} that made it were freed.")
            if spec.retries_left > 0:
                spec.retries_left -= 1
            spec.attempt += 1
            for i in range(1, spec.num_returns + 1):
                ret = self.objects.get(spec.task_id + i.to_bytes(4, "big"))
                if ret is not None:
                    ret.value = None
                    ret.mapped = None
            self.tasks[spec.task_id] = spec
            spec.lease = None
            spec.pins = spec.lineage_pins
            if self._pin_and_await_args(spec, lambda: self._dep_ready(spec)) == 0:
                self._dispatch_task(spec)

    def wait(self, refs: Sequence[ObjectRef], num_returns: int, timeout: float | None,
             fetch_local: bool) -> tuple[list[ObjectRef], list[ObjectRef]]:
        if self.daemon_error is not None:
            self.raise_daemon_died()
        # Fast path: scan in order and stop at the num_returns-th ready ref.
        done_idx = []
        objects = self.objects
        with self.lock:
            for i, ref in enumerate(refs):
                entry = objects.get(ref._id)
                if entry is not None and entry.value is not None:
                    done_idx.append(i)
                    if len(done_idx) == num_returns:
                        break
        if len(done_idx) == num_returns:
            return self._split(refs, done_idx)
        if len(refs) > 32:
            return self._wait_scanning(refs, num_returns, timeout, fetch_local)
        oids = [r._id for r in refs]
        ready = self._wait_ready(oids, num_returns, timeout)
        done, rest = [], []
        for ref in refs:
            if ref._id in ready and len(done) < num_returns:
                done.append(ref)
            else:
                rest.append(ref)
        return done, rest

    @staticmethod
    def _split(refs: Sequence[ObjectRef], done_idx: list[int]) -> tuple[list, list]:
        done = [refs[i] for i in done_idx]
        rest: list[ObjectRef] = []
        prev = 0
        for i in done_idx:
            rest.extend(refs[prev:i])
            prev = i + 1
        rest.extend(refs[prev:])
        return done, rest

    def _wait_scanning(self, refs: Sequence[ObjectRef], num_returns: int,
                       timeout: float | None, fetch_local: bool) -> tuple[list, list]:
        """``wait`` on many refs: sleep until any object becomes ready, then rescan in order.

        Cheaper than a callback on every pending entry when ``wait`` is called in a loop over a
        long list whose objects complete roughly in order."""
        deadline = None if timeout is None else time.monotonic() + timeout
        objects = self.objects
        event = Waiter()
        fetched = False
        blocked = self.on_blocked is not None and self.current_task_id is not None
        try:
            while True:
                done_idx: list[int] = []
                with self.lock:
                    for i, ref in enumerate(refs):
                        entry = objects.get(ref._id)
                        if entry is None:
                            raise exc.ReferenceCountingAssertionError(
                                ref.hex(), f"Object {ref.hex()} is unknown here (freed already).")
                        if entry.value is not None:
                            done_idx.append(i)
                            if len(done_idx) == num_returns:
                                break
                        elif fetch_local and not fetched:
                            self._ensure_fetch(ref._id, entry)
                    fetched = True
                    if self.daemon_error is not None:
                        self.raise_daemon_died()
                    left = None if deadline is None else deadline - time.monotonic()
                    if len(done_idx) == num_returns or (left is not None and left <= 0):
                        return self._split(refs, done_idx)
                    event.clear()
                    self._ready_listeners.append(event.set)
                if blocked:
                    self.on_blocked(True)
                    blocked_now = True
                else:
                    blocked_now = False
                try:
                    self.reactor.run_until(event, left)
                finally:
                    if blocked_now:
                        self.on_blocked(False)
        finally:
            with self.lock:
                try:
                    self._ready_listeners.remove(event.set)
                except ValueError:
                    pass

    def as_future(self, ref: ObjectRef) -> Future:
        fut: Future = Future()
        oid = ref._id

        def resolve():
            try:
                fut.set_result(self.get([ref], None)[0])
            except BaseException as e:  # noqa: BLE001
                fut.set_exception(e)

        with self.lock:
            entry = self.objects[oid]
            if entry.value is None:
                def cb():
                    _future_pool().submit(resolve)
                entry.waiters = (entry.waiters or []) + [cb]
                self._ensure_fetch(oid, entry)
                return fut
        resolve()
        return fut

    # ================================================================================
    # task submission
    # ================================================================================
    def export_function(self, fn_id: bytes, blob: bytes) -> None:
        if fn_id in self.exported:
            return
        self.call_daemon("export_function", fn_id, blob, _import_path())
        self.exported.add(fn_id)

    def submit_task(
        self,
        *,
        fn_id: bytes,
        fn_name: str,
        args: tuple,
        kwargs: dict,
        num_returns: int,
        generator: bool,
        max_retries: int,
        retry_exceptions: Any,
        resources: dict,
        strategy: str,
        name: str | None,
        pg: tuple | None = None,
    ) -> list[ObjectRef] | ObjectRefGenerator:
        if self.daemon_error is not None:
            self.raise_daemon_died()
        task_id = ids.new_task_id()
        spec = TaskSpec()
        spec.task_id = task_id
        spec.fn_id = fn_id
        spec.fn_name = fn_name
        spec.num_returns = num_returns
        spec.generator = generator
        spec.retries_left = max_retries
        spec.retry_exceptions = retry_exceptions
        spec.resources = resources
        spec.key = (tuple(sorted(resources.items())), strategy)
        spec.name = name
        spec.cancelled = False
        spec.lease = None
        spec.parent = self.current_task_id
        spec.attempt = 0
        spec.actor = None
        spec.pg = pg
        self._encode_args(spec, args, kwargs)
        with self.lock:
            returns = self._track_task(spec)
        if generator:
            return ObjectRefGenerator(task_id, self.address, self)
        return returns

    def _track_task(self, spec: TaskSpec) -> list[ObjectRef]:
        """Record a new task or actor call: its return entries, pins and pending arguments,
        and dispatch it when its arguments are ready. Lock held. Returns its refs."""
        task_id = spec.task_id
        returns: list[ObjectRef] = []
        self.tasks[task_id] = spec
        if spec.parent is not None:
            self.children.setdefault(spec.parent, []).append(task_id)
        if spec.generator:
            self.generators[task_id] = GeneratorState()
        else:
            for i in range(1, spec.num_returns + 1):
                oid = task_id + i.to_bytes(4, "big")
                entry = ObjectEntry(True, self.address)
                entry.local = 1
                self.objects[oid] = entry
                returns.append(ObjectRef(oid, self.address, self))
        pending = self._pin_and_await_args(spec, lambda spec=spec: self._dep_ready(spec))
        if pending == 0:
            self._dispatch_task(spec)
        return returns

    def _pin_and_await_args(self, spec: TaskSpec, on_ready: Callable[[], None]) -> int:
        """Pin the refs ``spec`` holds and have ``on_ready`` called once per argument ref
        whose value is not here yet (fetching it). Sets and returns ``spec.deps_pending``.
        Lock held."""
        objects = self.objects
        for ref in spec.pins:
            entry = objects.get(ref._id)
            if entry is not None:
                entry.pins += 1
        pending = 0
        for ref in spec.arg_refs:
            entry = objects[ref._id]
            if entry.value is None:
                pending += 1
                entry.waiters = (entry.waiters or []) + [on_ready]
                self._ensure_fetch(ref._id, entry)
        spec.deps_pending = pending
        return pending

    def _encode_args(self, spec: TaskSpec, args: tuple, kwargs: dict) -> None:
        arg_refs: list[ObjectRef] = []
        if not args and not kwargs:
            spec.args = None
            spec.arg_refs = arg_refs
            spec.pins = arg_refs
            return
        if any(type(a) is ObjectRef for a in args) or any(
                type(v) is ObjectRef for v in kwargs.values()):
            def sub(v):
                if type(v) is ObjectRef:
                    arg_refs.append(v)
                    return ArgRef(len(arg_refs) - 1)
                return v
            args = tuple(sub(a) for a in args)
            kwargs = {k: sub(v) for k, v in kwargs.items()}
        ser = serialization.serialize((args, kwargs))
        if ser.size >= INLINE_LIMIT:
            # Large arguments go through the object store once, passed by reference.
            args = tuple(self._promote(a) for a in args)
            kwargs = {k: self._promote(v) for k, v in kwargs.items()}
            big = [v for v in list(args) + list(kwargs.values()) if type(v) is ObjectRef]
            for ref in big:
                arg_refs.append(ref)
            idx = {id(r): len(arg_refs) - len(big) + i for i, r in enumerate(big)}
            args = tuple(ArgRef(idx[id(a)]) if type(a) is ObjectRef else a for a in args)
            kwargs = {k: ArgRef(idx[id(v)]) if type(v) is ObjectRef else v
                      for k, v in kwargs.items()}
            ser = serialization.serialize((args, kwargs))
        bufs = [b.raw().tobytes() for b in ser.buffers] if ser.buffers else None
        spec.args = (ser.payload, bufs)
        spec.arg_refs = arg_refs
        spec.pins = arg_refs + ser.contained if ser.contained else arg_refs

    def _promote(self, value: Any) -> Any:
        if type(value) is ObjectRef or type(value) is ArgRef:
            return value
        ser = serialization.serialize(value)
        if ser.size < INLINE_LIMIT // 4:
            return value
        oid = ids.new_put_id()
        entry = ObjectEntry(True, self.address)
        entry.value = self._place(oid, ser)
        entry.local = 1
        if ser.contained:
            entry.contained = ser.contained
        with self.lock:
            self.objects[oid] = entry
        return ObjectRef(oid, self.address, self)

    def _dep_ready(self, spec: TaskSpec) -> None:
        spec.deps_pending -= 1
        if spec.deps_pending == 0 and not spec.cancelled:
            self._dispatch_task(spec)

    def _resolved_args(self, spec: TaskSpec) -> list:
        out = []
        for ref in spec.arg_refs:
            entry = self.objects[ref._id]
            entry.exposed = True
            out.append((ref._id, ref._owner, entry.value if entry.owned else None))
        return out

    def _dispatch_task(self, spec: TaskSpec) -> None:
        """Push ``spec`` to a leased worker, or queue it and ask for a lease. Lock held."""
        if spec.actor is not None:
            self._actor_dispatch(spec)
            return
        ks = self.keys.get(spec.key)
        if ks is None:
            ks = self.keys[spec.key] = KeyState()
        if ks.infeasible is not None:
            self._fail_task(spec, _error_value(exc.TaskUnschedulableError(ks.infeasible)))
            return
        lease = self._pick_lease(ks)
        if lease is not None:
            self._push(lease, spec)
            return
        ks.queue.append(spec)
        self._request_leases(ks, spec.key)

    def _pick_lease(self, ks: KeyState) -> Lease | None:
        best = None
        for lease in ks.leases:
            n = len(lease.inflight)
            if n == 0:
                return lease
            if best is None or n < len(best.inflight):
                best = lease
        if best is None:
            return None
        # Pipeline only when the daemon has said no more workers are free right now.
        if (len(best.inflight) < PIPELINE_DEPTH and ks.requests > 0
                and ks.requests == ks.requests_queued):
            return best
        return None

    def _push(self, lease: Lease, spec: TaskSpec) -> None:
        lease.inflight[spec.task_id] = spec
        lease.idle_token += 1
        spec.lease = lease
        try:
            lease.conn.send((m.PUSH_TASK, spec.wire(lease.gpu_ids, self._resolved_args(spec), self.job_id)))
        except ConnectionClosed:
            pass  # the close handler retries the task

    def _request_leases(self, ks: KeyState, key: Any) -> None:
        want = min(len(ks.queue), MAX_LEASE_REQUESTS) - ks.requests
        for _ in range(max(0, want)):
            ks.requests += 1
            req = next(self._req)
            self.calls[req] = lambda ok, info, req=req: self._lease_queued(req)
            self.lease_requests[req] = [key, self.daemon, False]
            self._send_daemon((m.LEASE_REQUEST, req, dict(key[0]), key[1], self.address))

    def _on_lease_spill(self, conn: Connection, msg: tuple) -> None:
        """The daemon says: ask node ``node_id``'s daemon for this lease. It is asked to grant
        or queue it (never to send it on again). An unreachable node is reported to the local
        daemon, which leaves it out, and the request goes back there."""
        _, req, node_id, address, key_list = msg
        with self.lock:
            pending = self.lease_requests.get(req)
            if pending is None:
                return
            request = (m.LEASE_REQUEST, req, key_list[0], key_list[1], self.address, True)
            try:
                remote = self.peer(address)
                remote.send(request)
            except (OSError, ConnectionClosed):
                self.notify_daemon("node_unreachable", node_id)
                self._send_daemon(request[:5])
                return
            pending[1] = remote

    def _lease_requests_lost(self, conn: Connection) -> None:
        """A daemon that had lease requests of ours went away: ask again. Lock held."""
        lost = [req for req, p in self.lease_requests.items() if p[1] is conn]
        if not lost:
            return
        again = set()
        for req in lost:
            key, _, queued = self.lease_requests.pop(req)
            self.calls.pop(req, None)
            ks = self.keys.get(key)
            if ks is None:
                continue
            ks.requests -= 1
            if queued:
                ks.requests_queued -= 1
            again.add(key)
        if self.closed or self.daemon.closed:
            return
        for key in again:
            ks = self.keys[key]
            if ks.queue:
                self._request_leases(ks, key)

    def _lease_queued(self, req: int) -> None:
        with self.lock:
            pending = self.lease_requests.get(req)
            if pending is None:
                return
            pending[2] = True
            key = pending[0]
            ks = self.keys[key]
            ks.requests_queued += 1
            # now pipelining is allowed: fill the leases we have
            while ks.queue:
                lease = self._pick_lease(ks)
                if lease is None:
                    break
                self._push(lease, ks.queue.popleft())

    def _on_lease_grant(self, conn: Connection, msg: tuple) -> None:
        _, req, worker_id, address, gpu_ids, key_list, was_queued = msg
        self.calls.pop(req, None)
        key = (tuple(sorted(key_list[0].items())), key_list[1])
        with self.lock:
            self.lease_requests.pop(req, None)
            ks = self.keys[key]
            ks.requests -= 1
            if was_queued:
                ks.requests_queued -= 1
            try:
                wconn = self.peer(address)
            except OSError:
                _send_quietly(conn, (m.LEASE_RETURN, worker_id, True))
                if ks.queue:
                    self._request_leases(ks, key)
                return
            lease = Lease(worker_id, address, wconn, key, gpu_ids, conn)
            ks.leases.append(lease)
            if not ks.queue:
                self._lease_idle(ks, lease)
                return
            self._push(lease, ks.queue.popleft())
            while ks.queue and ks.requests == ks.requests_queued:
                nxt = self._pick_lease(ks)
                if nxt is None:
                    break
                self._push(nxt, ks.queue.popleft())

    def _cancel_lease_requests(self, key: Any) -> None:
        """The key's queue is empty: its lease requests still waiting at daemons would only
        hold a place there (and show as demand), so they are withdrawn. Lock held."""
        for req, (k, conn, _) in self.lease_requests.items():
            if k == key:
                _send_quietly(conn, (m.LEASE_CANCEL, req))

    def _on_lease_cancelled(self, conn: Connection, msg: tuple) -> None:
        _, req, key_list = msg
        self.calls.pop(req, None)
        key = (tuple(sorted(key_list[0].items())), key_list[1])
        with self.lock:
            pending = self.lease_requests.pop(req, None)
            if pending is None:
                return
            ks = self.keys[key]
            ks.requests -= 1
            if pending[2]:
                ks.requests_queued -= 1
            if ks.queue:  # tasks came meanwhile
                self._request_leases(ks, key)

    def _on_lease_fail(self, conn: Connection, msg: tuple) -> None:
        _, req, message, key_list = msg
        self.calls.pop(req, None)
        key = (tuple(sorted(key_list[0].items())), key_list[1])
        with self.lock:
            self.lease_requests.pop(req, None)
            ks = self.keys[key]
            ks.requests -= 1
            ks.infeasible = message
            logger.warning("%s", message)
            while ks.queue:
                self._fail_task(ks.queue.popleft(),
                                _error_value(exc.TaskUnschedulableError(message)))

    def _on_lease_reclaim(self, conn: Connection, msg: tuple) -> None:
        with self.lock:
            self.reclaim = msg[1]
            if not self.reclaim:
                return
            for ks in self.keys.values():
                for lease in list(ks.leases):
                    if not lease.inflight and not ks.queue:
                        self._return_lease(ks, lease)

    def _lease_idle(self, ks: KeyState, lease: Lease) -> None:
        """A lease has nothing in flight and the key's queue is empty. Lock held."""
        if ks.requests:
            self._cancel_lease_requests(lease.key)
        busiest = max(ks.leases, key=lambda ls: len(ls.inflight))
        if len(busiest.inflight) > 1:
            try:
                busiest.conn.send((m.STEAL,))
            except ConnectionClosed:
                pass
        lease.idle_token += 1
        token = lease.idle_token
        if self.reclaim:  # other owners wait for workers: no lingering
            self._return_lease(ks, lease)
            return

        def arm() -> None:
            self.reactor.call_later(LEASE_LINGER_S, lambda: self._linger_done(ks, lease, token))

        if self.reactor.is_leader():
            arm()
        else:
            self.reactor.call_soon_threadsafe(arm)

    def _linger_done(self, ks: KeyState, lease: Lease, token: int) -> None:
        with self.lock:
            if lease.idle_token == token and not lease.inflight and lease in ks.leases:
                self._return_lease(ks, lease)

    def _return_lease(self, ks: KeyState, lease: Lease, kill: bool = False) -> None:
        if lease in ks.leases:
            ks.leases.remove(lease)
            _send_quietly(lease.daemon, (m.LEASE_RETURN, lease.worker_id, kill))

    def _lease_lost(self, ks: KeyState, lease: Lease) -> None:
        """The leased worker died. Retry or fail what it was running. Lock held."""
        ks.leases.remove(lease)
        _send_quietly(lease.daemon, (m.LEASE_RETURN, lease.worker_id, True))
        inflight = list(lease.inflight.values())
        lease.inflight.clear()
        for spec in inflight:
            spec.lease = None
            if spec.cancelled:
                self._fail_task(spec, _error_value(exc.TaskCancelledError(spec.task_id.hex())))
            elif spec.retries_left != 0 and not self._gen_started(spec):
                if spec.retries_left > 0:
                    spec.retries_left -= 1
                spec.attempt += 1
                self._dispatch_task(spec)
            else:
                self._fail_task(spec, _error_value(exc.WorkerCrashedError(
                    f"The worker running task {spec.fn_name} ({spec.task_id.hex()}) died "
                    f"unexpectedly (pid exited or was killed); retries are exhausted "
                    f"(max_retries)."
                )))

    def _gen_started(self, spec: TaskSpec) -> bool:
        gs = self.generators.get(spec.task_id)
        return gs is not None and gs.produced > 0

    # ---- completion ---------------------------------------------------------------
    def _on_task_done(self, conn: Connection, msg: tuple) -> None:
        _, task_id, values, contained = msg
        with self.lock:
            spec = self.tasks.get(task_id)
            if spec is None:
                return
            lease = spec.lease
            if lease is not None:
                lease.inflight.pop(task_id, None)
                spec.lease = None
            elif spec.actor is not None:
                spec.actor.inflight.pop(task_id, None)
            if values and values[0][0] == m.VALUE_ERROR and self._should_retry(spec, values[0]):
                spec.attempt += 1
                self._dispatch_task(spec)
            else:
                self._complete(spec, values, contained, conn.peer)
            if lease is not None and not lease.inflight:
                ks = self.keys[lease.key]
                if ks.queue:
                    self._push(lease, ks.queue.popleft())
                elif lease in ks.leases:
                    self._lease_idle(ks, lease)
            elif lease is not None:
                ks = self.keys[lease.key]
                while ks.queue and len(lease.inflight) < PIPELINE_DEPTH:
                    self._push(lease, ks.queue.popleft())

    def _should_retry(self, spec: TaskSpec, value: tuple) -> bool:
        if spec.cancelled or spec.retries_left == 0 or not spec.retry_exceptions:
            return False
        if spec.generator and self._gen_started(spec):
            return False
        if spec.retry_exceptions is not True:
            try:
                err = serialization.deserialize(value[1])
            except Exception:  # noqa: BLE001
                return False
            cause = err.cause if isinstance(err, exc.RayTaskError) else err
            if not isinstance(cause, tuple(spec.retry_exceptions)):
                return False
        if spec.retries_left > 0:
            spec.retries_left -= 1
        return True

    def _complete(self, spec: TaskSpec, values: list, contained: list, producer: str) -> None:
        """Record a finished task's returns. Lock held."""
        del self.tasks[spec.task_id]
        self._forget_child(spec)
        if spec.generator:
            gs = self.generators.get(spec.task_id)
            if values and values[0][0] == m.VALUE_ERROR:
                if gs is not None:
                    self._gen_store(spec.task_id, gs, gs.produced + 1, values[0], None,
                                    producer)
            if gs is not None:
                gs.done = True
                self._wake_gen(gs)
        else:
            rebuildable = spec.actor is None and spec.retries_left != 0
            for i, value in enumerate(values, 1):
                oid = spec.task_id + i.to_bytes(4, "big")
                entry = self.objects.get(oid)
                if entry is None:
                    if value[0] == m.VALUE_SHM:
                        self._send_daemon((m.OBJECT_FREE, [oid.hex()]))
                    continue
                if contained and contained[i - 1]:
                    entry.producer = producer
                if rebuildable and value[0] == m.VALUE_SHM and value[2] != self.node_id:
                    # made on another node, which may die: keep the task to run it again
                    # (with the refs it holds, so its arguments stay too)
                    entry.lineage = spec
                    spec.lineage_pins = spec.pins
                self._set_value(oid, entry, value)
        self._unpin(spec)

    def _unpin(self, spec: TaskSpec) -> None:
        for ref in spec.pins:
            entry = self.objects.get(ref._id)
            if entry is not None:
                entry.pins -= 1
                if entry.pins <= 0:
                    self._maybe_free(ref._id, entry)
        spec.pins = ()

    def _forget_child(self, spec: TaskSpec) -> None:
        if spec.parent is not None:
            kids = self.children.get(spec.parent)
            if kids is not None:
                try:
                    kids.remove(spec.task_id)
                except ValueError:
                    pass
                if not kids:
                    del self.children[spec.parent]

    def _fail_task(self, spec: TaskSpec, value: tuple) -> None:
        """Store ``value`` (an error) as every return of ``spec``. Lock held."""
        if spec.task_id not in self.tasks:
            return
        if spec.generator:
            self._complete(spec, [value], [], None)
        else:
            self._complete(spec, [value] * spec.num_returns, [], None)

    def _on_requeue(self, conn: Connection, msg: tuple) -> None:
        with self.lock:
            for task_id in reversed(msg[1]):
                spec = self.tasks.get(task_id)
                if spec is None or spec.lease is None:
                    continue
                spec.lease.inflight.pop(task_id, None)
                spec.lease = None
                ks = self.keys[spec.key]
                ks.queue.appendleft(spec)
            for ks in self.keys.values():
                if ks.queue:
                    for lease in ks.leases:
                        if not lease.inflight and ks.queue:
                            self._push(lease, ks.queue.popleft())
                    self._request_leases(ks, ks.queue[0].key if ks.queue else None)

    # ---- generators ---------------------------------------------------------------
    def _on_gen_item(self, conn: Connection, msg: tuple) -> None:
        _, task_id, index, value, contained = msg
        with self.lock:
            gs = self.generators.get(task_id)
            if gs is None:
                if value[0] == m.VALUE_SHM:
                    self._send_daemon((m.OBJECT_FREE, [(task_id + index.to_bytes(4, "big")).hex()]))
                return
            self._gen_store(task_id, gs, index, value, contained, conn.peer)
            self._wake_gen(gs)

    def _gen_store(self, task_id, gs, index, value, contained, producer) -> None:
        oid = task_id + index.to_bytes(4, "big")
        entry = ObjectEntry(True, self.address)
        entry.gen_hold = True
        if contained:
            entry.producer = producer
        entry.value = value
        self.objects[oid] = entry
        gs.produced = max(gs.produced, index)

    def _wake_gen(self, gs: GeneratorState) -> None:
        waiters, gs.cond_waiters = gs.cond_waiters, []
        for w in waiters:
            w()

    def next_generator_item(self, task_id: bytes, index: int,
                            timeout: float | None) -> ObjectRef | None:
        event = Waiter()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self.lock:
                gs = self.generators.get(task_id)
                if gs is None:
                    return None
                if gs.produced >= index:
                    oid = task_id + index.to_bytes(4, "big")
                    entry = self.objects[oid]
                    entry.gen_hold = False
                    entry.local += 1
                    return ObjectRef(oid, self.address, self)
                if gs.done:
                    return None
                event.clear()
                gs.cond_waiters.append(event.set)
            blocked = self.on_blocked is not None and self.current_task_id is not None
            if blocked:
                self.on_blocked(True)
            try:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not self.reactor.run_until(event, remaining):
                    raise exc.GetTimeoutError("timed out waiting for the next generator item")
            finally:
                if blocked:
                    self.on_blocked(False)

    def generator_completed_ref(self, task_id: bytes) -> ObjectRef:
        raise NotImplementedError("ObjectRefGenerator.completed() is not supported yet")

    def _drop_generator(self, task_id: bytes) -> None:
        gs = self.generators.get(task_id)
        if gs is None or not gs.done:
            return  # keep items until the task ends; freed on the next drop
        del self.generators[task_id]
        for i in range(1, gs.produced + 1):
            oid = task_id + i.to_bytes(4, "big")
            entry = self.objects.get(oid)
            if entry is not None and entry.gen_hold:
                entry.gen_hold = False
                self._maybe_free(oid, entry)

    # ================================================================================
    # cancellation
    # ================================================================================
    def cancel(self, ref: ObjectRef, force: bool, recursive: bool) -> None:
        task_id = ref._id[:16]
        with self.lock:
            spec = self.tasks.get(task_id)
            if spec is None:
                return
            if force and spec.actor is not None:
                raise ValueError(
                    "force=True is not supported for actor calls: use quanta.kill(actor) to "
                    "stop the actor's process.")
            spec.cancelled = True
            cancelled = _error_value(exc.TaskCancelledError(task_id.hex()))
            if spec.actor is not None:
                self._actor_cancel(spec, force, recursive)
                return
            if spec.lease is None:
                ks = self.keys.get(spec.key)
                if ks is not None and spec in ks.queue:
                    ks.queue.remove(spec)
                self._fail_task(spec, cancelled)
                return
            conn = spec.lease.conn
        try:
            conn.send((m.CANCEL_TASK, task_id, force, recursive))
        except ConnectionClosed:
            pass

    def cancel_children(self, parent: bytes, force: bool) -> None:
        with self.lock:
            kids = list(self.children.get(parent, ()))
        for task_id in kids:
            self.cancel(ObjectRef(task_id + b"\0\0\0\1", self.address, None, count=False),
                        force, True)

    # ================================================================================
    # shutdown
    # ================================================================================
    def shutdown(self) -> None:
        self.closed = True
        self.reactor.stop()
        if self.reactor.thread is not None:
            self.reactor.thread.join(5)


def _peer_pid(sock: socket.socket) -> int | None:
    """The pid of the process at the other end of a Unix socket (None for TCP)."""
    if sock.family != socket.AF_UNIX:
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    return struct.unpack("3i", creds)[0] or None


def _at_eof(sock: socket.socket) -> bool:
    """True when the peer of ``sock`` has closed it and nothing is left to read."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def _send_quietly(conn: Connection, msg: tuple) -> None:
    """Send where a closed connection needs no handling (its close handler did it)."""
    try:
        conn.send(msg)
    except ConnectionClosed:
        pass


def _import_path() -> list[str]:
    """This process's import path, absolute, so workers can import what the driver can."""
    import sys

    return [os.path.abspath(p) if p else os.getcwd() for p in sys.path if isinstance(p, str)]


_error_value = serialization.error_value
_pool_lock = threading.Lock()
_resolver_pool = None


def _future_pool():
    """A few threads that decode values for ``ObjectRef.future()`` (decoding may block, so
    it stays off the reactor thread), instead of a thread per pending ref."""
    global _resolver_pool
    if _resolver_pool is None:
        with _pool_lock:
            if _resolver_pool is None:
                from concurrent.futures import ThreadPoolExecutor

                _resolver_pool = ThreadPoolExecutor(4, thread_name_prefix="quanta-future")
    return _resolver_pool


class _Source:
    """Which peer the value being unpickled came from (see _register_borrow)."""

    def __init__(self) -> None:
        self._local = worker_state.decoding

    def get(self) -> str | None:
        return getattr(self._local, "v", None)

    def set(self, v: str | None) -> str | None:
        old = getattr(self._local, "v", None)
        self._local.v = v
        return old

    def reset(self, old: str | None) -> None:
        self._local.v = old

    def batch(self) -> dict[str, list[bytes]] | None:
        return getattr(self._local, "batch", None)

    def start_batch(self) -> dict[str, list[bytes]]:
        """Collect borrow adds and decoded refs while decoding; close with
        :meth:`CoreWorker.end_decode`, which counts the refs and sends the borrow adds."""
        local = self._local
        batch: dict[str, list[bytes]] = {}
        local.outer = (getattr(local, "batch", None), getattr(local, "refs", None),
                       getattr(local, "outer", None))
        local.batch = batch
        local.refs = []
        return batch

    def end_batch(self, batch: dict[str, list[bytes]]) -> list[ObjectRef]:
        """Restore the enclosing batch; return the refs decoded in this one (uncounted)."""
        local = self._local
        refs = local.refs
        local.batch, local.refs, local.outer = local.outer
        return refs


_source = _Source()
