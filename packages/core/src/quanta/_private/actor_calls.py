"""The caller's side of actors, mixed into :class:`~quanta._private.core_worker.CoreWorker`.

Contract
--------
*Creation.* ``create_actor`` registers the actor with the control store synchronously (a name
already taken raises ``ValueError`` here, at the call site), then sends the creation spec once
the constructor's top-level ref arguments are ready. The creator owns the actor's *handle
ref*: an ObjectRef whose id is the actor id plus ``HANDLE_SUFFIX``. Every ActorHandle holds
it, pickling a handle makes the receiver a borrower of it, and every call in flight pins it;
when the owner's count of it drops to zero the actor is killed (Ray's handle-scoped actor
lifetime). Detached actors have no handle ref.

*Calls.* Each actor this process calls has an :class:`ActorState`. Calls enter its queue in
submission order and leave it in that order, once the actor is ``ALIVE`` and the call's ref
arguments are ready, straight to the actor's worker over the one connection to it
(``ACTOR_CALL``). Replies are ordinary ``TASK_DONE`` / ``GEN_ITEM`` messages.

*State.* Every process that calls an actor subscribes to it with the node daemon and gets an
``ACTOR_STATE`` message on every change. A change of *incarnation* (a restart) or ``DEAD``
means the calls sent to the old process are lost: each is resent while it has
``max_task_retries`` left, else it fails (``ActorUnavailableError`` during a restart,
``ActorDiedError`` with the death's reason when the actor is dead). Calls made while the
actor restarts wait in the queue.
"""

from __future__ import annotations

import collections
from typing import Any

from quanta import exceptions as exc
from quanta._private import ids, serialization
from quanta._private import messages as m
from quanta._private.transport import ConnectionClosed
from quanta.object_ref import ObjectRef, ObjectRefGenerator

HANDLE_SUFFIX = b"\xff\xff\xff\xff"
ALIVE = "ALIVE"
DEAD = "DEAD"


def handle_ref_id(actor_id: str) -> bytes:
    return bytes.fromhex(actor_id) + HANDLE_SUFFIX


class ActorState:
    """What this process knows of one actor it calls."""

    __slots__ = ("actor_id", "state", "address", "conn", "incarnation", "queue", "inflight",
                 "reason", "creation", "class_name", "restartable")

    def __init__(self, actor_id: str, class_name: str) -> None:
        self.actor_id = actor_id
        self.class_name = class_name
        self.state = "PENDING_CREATION"
        self.address = ""
        self.conn = None
        self.incarnation = 0
        self.queue: collections.deque = collections.deque()
        self.inflight: dict[bytes, Any] = {}
        self.reason = ""
        self.creation: Any = None  # owner: the creation TaskSpec, pinning the args
        self.restartable = False  # owner: keep the args pinned after creation (re-runs)


def actor_died_error(st: ActorState) -> exc.ActorDiedError:
    return exc.ActorDiedError(
        f"The actor {st.class_name} ({st.actor_id}) is dead. {st.reason}".rstrip(),
        actor_id=st.actor_id)


class ActorCallsMixin:
    """Actor creation and calls; see the module docstring. Uses CoreWorker's state."""

    actor_states: dict[str, ActorState]

    # --- creation ---------------------------------------------------------------------
    def create_actor(self, *, class_id: bytes, class_name: str, args: tuple, kwargs: dict,
                     info: dict[str, Any], runtime: dict[str, Any]
                     ) -> tuple[str, ObjectRef | None, dict[str, Any] | None]:
        """Register and create an actor. Returns (actor_id, handle_ref, existing): when the
        name exists and ``get_if_exists`` was given, ``existing`` is that actor's record and
        nothing is created."""
        from quanta._private.core_worker import TaskSpec

        if self.daemon_error is not None:
            self.raise_daemon_died()
        actor_id = ids.new_actor_id()
        spec = TaskSpec()
        spec.task_id = bytes.fromhex(actor_id)
        spec.fn_name = class_name
        spec.pg = None
        spec.cancelled = False
        self._encode_args(spec, args, kwargs)
        detached = bool(info.get("detached"))
        handle_ref = None
        st = ActorState(actor_id, class_name)
        st.creation = spec
        st.restartable = info.get("max_restarts", 0) != 0
        creation = dict(runtime, actor_id=actor_id, class_id=class_id, class_name=class_name,
                        job_id=self.job_id, owner_address=self.address)
        info = dict(info, actor_id=actor_id, owner_address=self.address, job_id=self.job_id,
                    class_name=class_name,
                    handle_owner=None if detached else self.address)
        with self.lock:
            self.actor_states[actor_id] = st
            if not detached:
                from quanta._private.core_worker import ObjectEntry

                entry = ObjectEntry(True, self.address)
                entry.local = 1
                self.objects[handle_ref_id(actor_id)] = entry
                handle_ref = ObjectRef(handle_ref_id(actor_id), self.address, self)
            pending = self._pin_and_await_args(
                spec, lambda: self._creation_dep_ready(st, creation))
            if pending == 0:
                info["creation"] = self._creation_payload(spec, creation)
        try:
            existing = self.call_actor_manager("register_actor", info)
        except BaseException:
            with self.lock:
                self.actor_states.pop(actor_id, None)
                self._unpin(spec)
                if handle_ref is not None:
                    self.objects.pop(handle_ref._id, None)
                    handle_ref._cw = None
            raise
        if existing is not None:
            with self.lock:
                self.actor_states.pop(actor_id, None)
                self._unpin(spec)
                if handle_ref is not None:
                    self.objects.pop(handle_ref._id, None)
                    handle_ref._cw = None
            return existing["actor_id"], self.borrow_handle_ref(existing), existing
        return actor_id, handle_ref, None

    def _creation_payload(self, spec: Any, creation: dict[str, Any]) -> dict[str, Any]:
        return dict(creation, args=spec.args, resolved=self._resolved_args(spec))

    def _creation_dep_ready(self, st: ActorState, creation: dict[str, Any]) -> None:
        spec = st.creation
        spec.deps_pending -= 1
        if spec.deps_pending == 0:
            self.send_actor_manager((m.NOTIFY, "create_actor",
                               (st.actor_id, self._creation_payload(spec, creation))))

    def borrow_handle_ref(self, record: dict[str, Any]) -> ObjectRef | None:
        """A counted handle ref for an actor found by name (None for a detached actor)."""
        owner = record.get("handle_owner")
        if not owner:
            return None
        from quanta._private.core_worker import _source

        token = _source.set(self.daemon_address)  # a third party: the borrow is acknowledged
        try:
            return self.deserialize_ref(handle_ref_id(record["actor_id"]), owner)
        finally:
            _source.reset(token)

    # --- state ------------------------------------------------------------------------
    def actor_state(self, actor_id: str, class_name: str) -> ActorState:
        """This process's state of an actor; subscribes on first use. Lock held."""
        st = self.actor_states.get(actor_id)
        if st is not None:
            return st
        st = self.actor_states[actor_id] = ActorState(actor_id, class_name)
        req = next(self._req)
        self.calls[req] = lambda ok, state, st=st: self._subscribed(st, ok, state)
        self.send_actor_manager((m.CALL, req, "subscribe_actor", (actor_id,)))
        return st

    def _subscribed(self, st: ActorState, ok: bool, state: Any) -> None:
        with self.lock:
            if not ok:
                self._apply_actor_state(st, DEAD, "", st.incarnation, str(state))
            else:
                self._apply_actor_state(st, *state)

    def _on_actor_state(self, conn: Any, msg: tuple) -> None:
        _, actor_id, state, address, incarnation, reason = msg
        with self.lock:
            st = self.actor_states.get(actor_id)
            if st is not None:
                self._apply_actor_state(st, state, address, incarnation, reason)

    def _apply_actor_state(self, st: ActorState, state: str, address: str, incarnation: int,
                           reason: str) -> None:
        """Lock held."""
        if st.state == DEAD or incarnation < st.incarnation:
            return  # stale news
        st.state = state
        st.reason = reason
        if state == DEAD:
            self._actor_dead(st)
            return
        if incarnation > st.incarnation:
            st.incarnation = incarnation
            lost = [s for s in st.inflight.values() if s.incarnation < incarnation]
            for spec in reversed(lost):
                del st.inflight[spec.task_id]
                if spec.retries_left != 0 and not self._gen_started(spec):
                    if spec.retries_left > 0:
                        spec.retries_left -= 1
                    spec.attempt += 1
                    spec.incarnation = None
                    st.queue.appendleft(spec)
                else:
                    self._fail_task(spec, _error(exc.ActorUnavailableError(
                        f"The actor {st.class_name} ({st.actor_id}) restarted while this call "
                        "was running, so it may or may not have run; set max_task_retries to "
                        "retry such calls.")))
        if state == ALIVE:
            if st.creation is not None and not st.restartable:
                self._unpin(st.creation)  # the constructor will not run again
                st.creation = None
            st.address = address
            try:
                st.conn = self.peer(address)
            except OSError:
                st.conn = None
                return
            self._actor_flush(st)

    def _actor_dead(self, st: ActorState) -> None:
        """Fail every call to a dead actor. Lock held."""
        err = _error(actor_died_error(st))
        calls = list(st.inflight.values()) + list(st.queue)
        st.inflight.clear()
        st.queue.clear()
        st.conn = None
        for spec in calls:
            self._fail_task(spec, err)
        if st.creation is not None:
            self._unpin(st.creation)
            st.creation = None

    # --- calls ------------------------------------------------------------------------
    def submit_actor_call(self, *, actor_id: str, class_name: str, method: str, args: tuple,
                          kwargs: dict, num_returns: int, generator: bool, max_retries: int,
                          retry_exceptions: Any, group: str | None, name: str | None,
                          handle_ref: ObjectRef | None, max_pending: int = -1) -> Any:
        from quanta._private.core_worker import TaskSpec

        if self.daemon_error is not None:
            self.raise_daemon_died()
        task_id = ids.new_task_id()
        spec = TaskSpec()
        spec.task_id = task_id
        spec.fn_id = None
        spec.pg = None
        spec.fn_name = f"{class_name}.{method}"
        spec.method = method
        spec.group = group
        spec.num_returns = num_returns
        spec.generator = generator
        spec.retries_left = max_retries
        spec.retry_exceptions = retry_exceptions
        spec.name = name
        spec.cancelled = False
        spec.lease = None
        spec.parent = self.current_task_id
        spec.attempt = 0
        spec.incarnation = None
        self._encode_args(spec, args, kwargs)
        if handle_ref is not None:
            spec.pins = [*spec.pins, handle_ref]
        with self.lock:
            st = self.actor_state(actor_id, class_name)
            if 0 < max_pending <= len(st.queue) + len(st.inflight):
                raise exc.PendingCallsLimitExceeded(
                    f"The actor {class_name} ({actor_id}) already has {max_pending} calls "
                    f"pending from this process, its max_pending_calls; wait for some to "
                    "finish (or raise max_pending_calls).")
            spec.actor = st
            if st.state == DEAD:
                returns = self._track_task(spec)
                self._fail_task(spec, _error(actor_died_error(st)))
            else:
                st.queue.append(spec)
                returns = self._track_task(spec)
        if generator:
            return ObjectRefGenerator(task_id, self.address, self)
        return returns

    def _actor_dispatch(self, spec: Any) -> None:
        """A call's arguments are ready, or it is to be resent. Lock held."""
        st = spec.actor
        if spec.incarnation is not None:  # a retry: back to the front
            st.inflight.pop(spec.task_id, None)
            spec.incarnation = None
            st.queue.appendleft(spec)
        self._actor_flush(st)

    def _actor_flush(self, st: ActorState) -> None:
        """Send queued calls in order while the actor is alive. Lock held."""
        conn = st.conn
        if st.state != ALIVE or conn is None:
            return
        queue = st.queue
        job_id = self.job_id
        while queue:
            spec = queue[0]
            if spec.deps_pending:
                return
            queue.popleft()
            if spec.cancelled or spec.task_id not in self.tasks:
                continue
            spec.incarnation = st.incarnation
            st.inflight[spec.task_id] = spec
            try:
                conn.send((m.ACTOR_CALL, (
                    spec.task_id, spec.method, spec.args, self._resolved_args(spec),
                    spec.num_returns, spec.generator, spec.group, spec.attempt, job_id,
                    spec.fn_name)))
            except ConnectionClosed:
                # Never delivered: back to the front, to go to the actor's next incarnation
                # (its death arrives as ACTOR_STATE).
                del st.inflight[spec.task_id]
                spec.incarnation = None
                queue.appendleft(spec)
                return

    def _actor_cancel(self, spec: Any, force: bool, recursive: bool) -> None:
        """Lock held."""
        st = spec.actor
        if spec.incarnation is None:
            try:
                st.queue.remove(spec)
            except ValueError:
                pass
            self._fail_task(spec, _error(exc.TaskCancelledError(spec.task_id.hex())))
            self._actor_flush(st)  # the calls behind it may go now
            return
        if st.conn is not None:
            try:
                st.conn.send((m.CANCEL_TASK, spec.task_id, False, recursive))
            except ConnectionClosed:
                pass

    # --- termination ----------------------------------------------------------------------
    def kill_actor(self, actor_id: str, no_restart: bool) -> None:
        self.call_actor_manager("kill_actor", actor_id, no_restart)

    def _actor_handles_gone(self, oid: bytes) -> None:
        """The owner's last reference to an actor's handle ref went. Lock held."""
        actor_id = oid[:16].hex()
        self.send_actor_manager((m.NOTIFY, "actor_handles_gone", (actor_id,)))


_error = serialization.error_value
