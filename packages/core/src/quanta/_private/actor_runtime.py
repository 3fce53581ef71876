"""The actor inside its worker process: the instance and the way its calls run.

Contract
--------
The node daemon sends a worker ``ACTOR_CREATE``; from then on the worker hosts that actor
only. The constructor runs on the main thread; its outcome goes back to the daemon
(``actor_ready``, with the traceback if it raised). Calls arrive as ``ACTOR_CALL`` and run in
one of three ways, chosen from the class:

* **synchronous** (default): one at a time on the main thread, in arrival order, which is
  submission order per caller. Cancel interrupts a running call with SIGINT, like a task.
* **threaded** (``max_concurrency`` > 1 or ``concurrency_groups``): a thread pool per
  concurrency group. Cancel drops a call not started; a running one gets TaskCancelledError
  raised in its thread at its next Python instruction.
* **async** (any ``async def`` method): an asyncio loop on the main thread, each call a task,
  at most ``max_concurrency`` (default 1000) at once per group. Cancel cancels the task.

``exit_actor()`` raises :class:`ActorExit`; the call that made it and every call after it get
``ActorDiedError`` (as in Ray), and the daemon marks the actor dead (no restart) and kills the
process.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import inspect
import os
import threading
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from quanta import exceptions as exc
from quanta._private import messages as m
from quanta._private import serialization
from quanta._private.transport import Connection

if TYPE_CHECKING:
    from quanta._private.executor import Executor

DEFAULT_GROUP = "_default"
ASYNC_DEFAULT_CONCURRENCY = 1000


class ActorExit(BaseException):  # noqa: N818 - a control-flow signal, not an error
    """Raised by ``exit_actor()`` to end the actor after the current call."""


class ActorRuntime:
    def __init__(self, executor: Executor, creation: dict[str, Any]) -> None:
        self.ex = executor
        self.cw = executor.cw
        self.creation = creation
        self.actor_id: str = creation["actor_id"]
        self.class_name: str = creation["class_name"]
        self.instance: Any = None
        self.exiting: str | None = None
        self.is_async = bool(creation.get("is_async"))
        groups = dict(creation.get("concurrency_groups") or {})
        max_conc = creation.get("max_concurrency")
        if self.is_async:
            self.mode = "async"
            default = max_conc or ASYNC_DEFAULT_CONCURRENCY
        elif (max_conc or 1) > 1 or groups:
            self.mode = "threaded"
            default = max_conc or 1
        else:
            self.mode = "sync"
            default = 1
        groups[DEFAULT_GROUP] = default
        self.group_sizes = groups
        self.method_groups: dict[str, str] = dict(creation.get("method_groups") or {})
        self.pools: dict[str, ThreadPoolExecutor] = {}
        self.futures: dict[bytes, Future] = {}
        self.threads: dict[bytes, int] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.semaphores: dict[str, asyncio.Semaphore] = {}
        self.tasks: dict[bytes, asyncio.Task] = {}
        self.incoming: collections.deque = collections.deque()
        self.lock = threading.Lock()

    # --- creation (main thread) ---------------------------------------------------------
    def construct(self) -> None:
        cw = self.cw
        c = self.creation
        cw.actor_id = self.actor_id
        cw.actor_incarnation = c.get("incarnation", 0)
        cw.job_id = c.get("job_id", "")
        cw.namespace = c.get("namespace", "")
        cw.actor_meta = c.get("meta")
        cw.actor_name = c.get("name")
        cw.current_pg = c.get("pg")
        cw.actor_handle_owner = None if c.get("detached") else c.get("owner_address")
        self.ex._set_gpus(c.get("gpu_ids") or [])
        error = None
        try:
            cls = self.ex.load_function(c["class_id"])
            a, kw = self.ex._decode_args(cw.daemon, c.get("args"), c.get("resolved") or [])
            if self.is_async:
                self.loop = asyncio.new_event_loop()
                asyncio.set_event_loop(self.loop)
            self.instance = cls(*a, **kw)
        except BaseException as e:  # noqa: BLE001 - reported as the actor's death
            error = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        cw.send_actor_manager((m.NOTIFY, "actor_ready", (self.actor_id, c.get("incarnation", 0),
                                                         error, cw.address, os.getpid())))
        if error is None and self.loop is not None:
            self.loop.run_forever()

    # --- reactor thread -------------------------------------------------------------------
    def on_call(self, conn: Connection, spec: tuple) -> None:
        if self.mode == "sync":
            with self.ex.lock:
                self.ex.pending[spec[0]] = (conn, spec)
            self.ex.enqueue(spec[0])
        elif self.mode == "threaded":
            pool = self._pool(self._group(spec))
            with self.lock:
                self.futures[spec[0]] = pool.submit(self._run_in_thread, conn, spec)
        else:
            # One wake-up of the loop per burst of calls, not one per call.
            incoming = self.incoming
            incoming.append((conn, spec))
            if len(incoming) == 1:
                self.loop.call_soon_threadsafe(self._start_incoming)

    def cancel(self, conn: Connection, task_id: bytes, force: bool, recursive: bool) -> None:
        if self.mode == "sync":
            self.ex._cancel(conn, task_id, force, recursive)
            return
        if self.mode == "threaded":
            with self.lock:
                fut = self.futures.get(task_id)
                if fut is not None and fut.cancel():
                    cancelled = True
                else:
                    cancelled = False
                    ident = self.threads.get(task_id)
                    if ident is not None:  # still running it: raise inside, under the lock
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(
                            ctypes.c_ulong(ident), ctypes.py_object(exc.TaskCancelledError))
            if cancelled:
                self._reply_cancelled(conn, task_id)
            return

        def cancel_task() -> None:
            task = self.tasks.get(task_id)
            if task is not None:
                task.cancel()

        self.loop.call_soon_threadsafe(cancel_task)

    # --- running calls ----------------------------------------------------------------
    def _group(self, spec: tuple) -> str:
        group = spec[6] or self.method_groups.get(spec[1]) or DEFAULT_GROUP
        if group not in self.group_sizes:
            return DEFAULT_GROUP
        return group

    def _pool(self, group: str) -> ThreadPoolExecutor:
        pool = self.pools.get(group)
        if pool is None:
            pool = self.pools[group] = ThreadPoolExecutor(
                self.group_sizes[group], thread_name_prefix=f"quanta-actor-{group}")
        return pool

    def run_sync(self, conn: Connection, spec: tuple) -> None:
        """Run one call on this thread (the main thread, or a pool thread)."""
        (task_id, method, args, resolved, num_returns, generator, _group, _attempt, job_id,
         fn_name) = spec
        ex = self.ex
        if self.exiting is not None:
            ex._reply(conn, task_id, [self._dead_value()] * max(num_returns, 1), [])
            return
        if self.mode == "sync":
            self.cw.current_task_id = task_id
        try:
            fn = self._method(method)
            a, kw = ex._decode_args(conn, args, resolved)
            if generator:
                ex._run_generator(conn, task_id, fn, fn_name, a, kw)
                return
            result = fn(*a, **kw)
            values, contained = ex._encode_returns(task_id, result, num_returns, fn_name)
        except exc.TaskCancelledError:
            raise
        except (ActorExit, SystemExit):  # sys.exit() in a method ends the actor, as in Ray
            self._exit(conn, task_id, num_returns)
            return
        except BaseException as e:  # noqa: BLE001 - the call's error is its result
            values, contained = [ex._task_error(e, fn_name)] * max(num_returns, 1), []
        ex._reply(conn, task_id, values, contained)

    def _run_in_thread(self, conn: Connection, spec: tuple) -> None:
        task_id = spec[0]
        with self.lock:
            self.threads[task_id] = threading.get_ident()
        try:
            self.run_sync(conn, spec)
        except exc.TaskCancelledError:
            self._reply_cancelled(conn, task_id)
        finally:
            with self.lock:
                self.threads.pop(task_id, None)
                self.futures.pop(task_id, None)

    def _start_incoming(self) -> None:
        incoming = self.incoming
        create = self.loop.create_task
        tasks = self.tasks
        while incoming:
            conn, spec = incoming.popleft()
            task = create(self._run_async(conn, spec))
            tasks[spec[0]] = task
            task.add_done_callback(lambda t, c=conn, tid=spec[0]: self._async_done(t, c, tid))

    def _async_done(self, task: asyncio.Task, conn: Connection, task_id: bytes) -> None:
        self.tasks.pop(task_id, None)
        if task.cancelled():  # cancelled before its coroutine first ran: answer it here
            self._reply_cancelled(conn, task_id)

    async def _run_async(self, conn: Connection, spec: tuple) -> None:
        (task_id, method, args, resolved, num_returns, generator, _group, _attempt, job_id,
         fn_name) = spec
        ex = self.ex
        group = self._group(spec)
        sem = self.semaphores.get(group)
        if sem is None:
            sem = self.semaphores[group] = asyncio.Semaphore(self.group_sizes[group])
        try:
            async with sem:
                if self.exiting is not None:
                    ex._reply(conn, task_id, [self._dead_value()] * max(num_returns, 1), [])
                    return
                fn = self._method(method)
                a, kw = ex._decode_args(conn, args, resolved)
                if generator and inspect.isasyncgenfunction(fn):
                    await self._async_generator(conn, task_id, fn, fn_name, a, kw)
                    return
                if generator:
                    ex._run_generator(conn, task_id, fn, fn_name, a, kw)
                    return
                result = fn(*a, **kw)
                if inspect.isawaitable(result):
                    result = await result
                values, contained = ex._encode_returns(task_id, result, num_returns, fn_name)
        except asyncio.CancelledError:
            self._reply_cancelled(conn, task_id)
            return
        except (ActorExit, SystemExit):  # sys.exit() in a method ends the actor, as in Ray
            self._exit(conn, task_id, num_returns)
            return
        except BaseException as e:  # noqa: BLE001
            values, contained = [ex._task_error(e, fn_name)] * max(num_returns, 1), []
        ex._reply(conn, task_id, values, contained)

    async def _async_generator(self, conn, task_id, fn, fn_name, a, kw) -> None:
        ex = self.ex
        index = 0
        try:
            async for item in fn(*a, **kw):
                index += 1
                v, c = ex._encode_one(task_id + index.to_bytes(4, "big"), item)
                conn.send((m.GEN_ITEM, task_id, index, v, c))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001
            ex._reply(conn, task_id, [ex._task_error(e, fn_name)], [])
            return
        ex._reply(conn, task_id, [], [])

    def _method(self, name: str) -> Any:
        if name == "__ray_ready__":
            return lambda: True
        return getattr(self.instance, name)

    # --- ending -----------------------------------------------------------------------
    def _reply_cancelled(self, conn: Connection, task_id: bytes) -> None:
        self.ex._reply(conn, task_id,
                       [serialization.error_value(exc.TaskCancelledError(task_id.hex()))], [])

    def _dead_value(self) -> tuple:
        return serialization.error_value(exc.ActorDiedError(
            f"The actor {self.class_name} ({self.actor_id}) is dead. {self.exiting}",
            actor_id=self.actor_id))

    def _exit(self, conn: Connection, task_id: bytes, num_returns: int) -> None:
        """``exit_actor()`` was called by this call: answer it, then have the daemon end us."""
        self.exiting = ("The actor exited on purpose: exit_actor() (ray.actor.exit_actor) was "
                        "called in one of its methods.")
        self.ex._reply(conn, task_id, [self._dead_value()] * max(num_returns, 1), [])
        self.cw.send_actor_manager((m.NOTIFY, "actor_exit", (self.actor_id, self.exiting)))
