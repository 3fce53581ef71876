"""The task executor of a worker process.

The reactor thread receives pushed tasks and puts their ids on a queue; the main thread runs
them one at a time (Python signal handlers run on the main thread, which is what lets a
non-forced ``cancel`` interrupt even a ``time.sleep`` inside a task: the reactor sends the
process SIGINT and the handler raises TaskCancelledError in the task).

Tasks pushed but not started yet can be taken back: when the running task blocks in ``get``
they all go back to their owners (a child must never wait behind its parent on one worker),
and an owner whose other lease went idle may ``STEAL`` half of them.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import traceback
from typing import Any

from quanta import exceptions as exc
from quanta._private import messages as m
from quanta._private import serialization
from quanta._private.actor_runtime import ActorRuntime
from quanta._private.core_worker import ArgRef, CoreWorker, _error_value, _source
from quanta._private.transport import Connection, ConnectionClosed, Waiter


def _extend_import_path(path: list[str]) -> None:
    """Make the submitting process's modules importable here (new entries go last)."""
    import sys

    known = set(sys.path)
    for p in path:
        if p not in known:
            sys.path.append(p)
            known.add(p)


class Executor:
    def __init__(self, cw: CoreWorker) -> None:
        self.cw = cw
        self.pending: dict[bytes, tuple[Connection, tuple]] = {}
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self._work = Waiter()  # set whenever something is queued for the main thread
        self.running: bytes | None = None
        self.cancel_target: bytes | None = None
        self.lock = threading.Lock()
        self._default_cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.gpu_ids: list[int] = []
        self.actor: ActorRuntime | None = None  # set when this worker becomes an actor
        signal.signal(signal.SIGINT, self._on_sigint)
        cw.task_handler = self.on_message
        cw.on_blocked = self.on_blocked

    # --- reactor thread ---------------------------------------------------------------
    def on_message(self, conn: Connection, msg: tuple) -> None:
        kind = msg[0]
        if kind == m.PUSH_TASK:
            spec = msg[1]
            with self.lock:
                self.pending[spec[0]] = (conn, spec)
            self.enqueue(spec[0])
        elif kind == m.ACTOR_CALL:
            self.actor.on_call(conn, msg[1])
        elif kind == m.CANCEL_TASK:
            if self.actor is not None:
                self.actor.cancel(conn, msg[1], msg[2], msg[3])
            else:
                self._cancel(conn, msg[1], msg[2], msg[3])
        elif kind == m.ACTOR_CREATE:
            self.actor = ActorRuntime(self, msg[1])
            self.enqueue(self.actor.construct)
        elif kind == m.STEAL:
            with self.lock:
                mine = [t for t, (c, _) in self.pending.items() if c is conn]
                give = mine[len(mine) // 2:]  # the later half, rounded up
                for t in give:
                    del self.pending[t]
            if give:
                conn.send((m.REQUEUE, give))

    def enqueue(self, item: bytes | Any) -> None:
        """Give the main thread a task id to run, or a callable to call."""
        self.queue.put(item)
        self._work.set()

    def _cancel(self, conn: Connection, task_id: bytes, force: bool, recursive: bool) -> None:
        with self.lock:
            item = self.pending.pop(task_id, None)
        if item is not None:
            conn.send((m.TASK_DONE, task_id,
                       [_error_value(exc.TaskCancelledError(task_id.hex()))], []))
            return
        if recursive:
            threading.Thread(target=self.cw.cancel_children, args=(task_id, force),
                             daemon=True).start()
        if self.running == task_id:
            if force:
                os._exit(1)
            self.cancel_target = task_id
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    def _on_sigint(self, signum, frame) -> None:
        target = self.cancel_target
        if target is not None and target == self.running:
            self.cancel_target = None
            raise exc.TaskCancelledError(target.hex())

    def on_blocked(self, blocked: bool) -> None:
        """The running task entered (True) or left (False) a blocking ``get``/``wait``."""
        cw = self.cw
        if self.actor is not None:
            return  # an actor's calls cannot move to another worker
        if blocked:
            cw._send_daemon((m.WORKER_BLOCKED,))
            with self.lock:
                items = list(self.pending.items())
                self.pending.clear()
            by_conn: dict[Connection, list[bytes]] = {}
            for task_id, (conn, _) in items:
                by_conn.setdefault(conn, []).append(task_id)
            for conn, tids in by_conn.items():
                try:
                    conn.send((m.REQUEUE, tids))
                except ConnectionClosed:
                    pass
        else:
            cw._send_daemon((m.WORKER_UNBLOCKED,))

    # --- main thread ------------------------------------------------------------------
    def run_forever(self) -> None:
        """Run queued work forever. While idle, the main thread itself polls the connections
        (``Reactor.run_until``), so a pushed task or call is read and started on this thread
        without a hand-off from the reactor thread."""
        q = self.queue
        get = q.get_nowait
        pending = self.pending
        work = self._work
        run_until = self.cw.reactor.run_until
        while True:
            work.clear()
            if q.empty():
                run_until(work)
                continue
            task_id = get()
            if type(task_id) is not bytes:
                task_id()  # work for the main thread: an actor's constructor
                continue
            with self.lock:
                item = pending.pop(task_id, None)
            if item is None:
                continue
            conn, spec = item
            self.running = task_id
            try:
                if self.actor is not None:
                    self.actor.run_sync(conn, spec)
                else:
                    self.execute(conn, spec)
            except exc.TaskCancelledError:
                self._reply(conn, task_id, [_error_value(exc.TaskCancelledError(task_id.hex()))],
                            [])
            finally:
                self.running = None
                self.cw.current_task_id = None
                if self.cw.actor_id is None:  # an actor keeps its group for its life
                    self.cw.current_pg = None

    def execute(self, conn: Connection, spec: tuple) -> None:
        (task_id, fn_id, fn_name, args, resolved, num_returns, generator, name, gpu_ids,
         attempt, job_id, pg) = spec
        cw = self.cw
        cw.job_id = job_id
        self.running = task_id
        cw.current_task_id = task_id
        cw.current_pg = pg
        if gpu_ids != self.gpu_ids:
            self._set_gpus(gpu_ids)
        try:
            fn = self.load_function(fn_id)
            a, kw = self._decode_args(conn, args, resolved)
            if generator:
                self._run_generator(conn, task_id, fn, fn_name, a, kw)
                return
            result = fn(*a, **kw)
            values, contained = self._encode_returns(task_id, result, num_returns, fn_name)
        except exc.TaskCancelledError:
            raise
        except BaseException as e:  # noqa: BLE001 - the task's error is its result
            if isinstance(e, (SystemExit, KeyboardInterrupt)) and not isinstance(e, Exception):
                if isinstance(e, SystemExit):
                    os._exit(e.code if isinstance(e.code, int) else 1)
            err = self._task_error(e, fn_name)
            values, contained = [err] * max(num_returns, 1), []
        self._reply(conn, task_id, values, contained)

    def load_function(self, fn_id: bytes) -> Any:
        """The exported function (or actor class) ``fn_id``, fetched once per process."""
        cw = self.cw
        fn = cw.functions.get(fn_id)
        if fn is None:
            blob, path = cw.call_daemon("get_function", fn_id)
            _extend_import_path(path)
            fn = serialization.deserialize(blob)
            cw.functions[fn_id] = fn
        return fn

    def _reply(self, conn: Connection, task_id: bytes, values: list, contained: list) -> None:
        self.running = None
        try:
            conn.send((m.TASK_DONE, task_id, values, contained))
        except ConnectionClosed:
            pass

    def _set_gpus(self, gpu_ids: list[int]) -> None:
        self.gpu_ids = list(gpu_ids)
        if gpu_ids:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpu_ids)
        elif self._default_cuda is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = self._default_cuda

    def _decode_args(self, conn: Connection, args: Any, resolved: list) -> tuple[tuple, dict]:
        if args is None:
            return (), {}
        cw = self.cw
        old = _source.set(conn.peer)
        batch = _source.start_batch()
        try:
            a, kw = serialization.deserialize(args[0], args[1])
        finally:
            cw.end_decode(batch)  # while the source is still set: it decides acks
            _source.reset(old)
        if not resolved:
            return a, kw
        values = []
        for oid, owner, value in resolved:
            if value is not None:
                try:
                    values.append(cw.decode_value(oid, value, owner))
                    continue
                except exc.ObjectLostError as e:
                    if type(e) is not exc.ObjectLostError:
                        raise
                    cw.report_lost(oid, owner, value, e)  # then fetched again, below
            old = _source.set(conn.peer)
            try:
                ref = cw.deserialize_ref(oid, owner)
            finally:
                _source.reset(old)
            values.append(cw.get([ref], None)[0])
        a = tuple(values[x.index] if type(x) is ArgRef else x for x in a)
        if kw:
            kw = {k: values[v.index] if type(v) is ArgRef else v for k, v in kw.items()}
        return a, kw

    def _encode_one(self, oid: bytes, value: Any) -> tuple[tuple, list]:
        placed, contained = self.cw.encode_value(oid, value)
        if contained:
            self.cw.held[oid] = contained
        return placed, [r._id for r in contained]

    def _encode_returns(self, task_id: bytes, result: Any, num_returns: int,
                        fn_name: str) -> tuple[list, list]:
        if num_returns == 1:
            v, c = self._encode_one(task_id + b"\0\0\0\1", result)
            return [v], [c]
        if num_returns == 0:
            return [], []
        try:
            items = list(result)
        except TypeError:
            items = None
        if items is None or len(items) != num_returns:
            raise ValueError(
                f"Task {fn_name} was declared with num_returns={num_returns} but returned "
                f"{'a non-iterable value' if items is None else f'{len(items)} values'}."
            )
        values, contained = [], []
        for i, item in enumerate(items, 1):
            v, c = self._encode_one(task_id + i.to_bytes(4, "big"), item)
            values.append(v)
            contained.append(c)
        return values, contained

    def _run_generator(self, conn, task_id, fn, fn_name, a, kw) -> None:
        index = 0
        try:
            for item in fn(*a, **kw):
                index += 1
                v, c = self._encode_one(task_id + index.to_bytes(4, "big"), item)
                conn.send((m.GEN_ITEM, task_id, index, v, c))
        except exc.TaskCancelledError:
            raise
        except Exception as e:  # noqa: BLE001
            self._reply(conn, task_id, [self._task_error(e, fn_name)], [])
            return
        self._reply(conn, task_id, [], [])

    def _task_error(self, e: BaseException, fn_name: str) -> tuple:
        if isinstance(e, exc.RayTaskError):
            return _error_value(e)  # an upstream failure flows through unchanged
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        cause: BaseException | None = e
        try:
            serialization.deserialize(serialization.serialize_exception(e))
        except Exception:  # noqa: BLE001 - a cause that does not round-trip stays as text
            cause = None
        return _error_value(exc.RayTaskError(fn_name, tb, cause, os.getpid(), "127.0.0.1"))
