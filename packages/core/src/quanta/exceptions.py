"""Errors raised by Quanta, under Ray's class names so ``except ray.exceptions.X`` keeps working.

:class:`RayTaskError` wraps an exception raised inside a task. ``get`` raises an instance that
is *also* an instance of the user's own exception class (a subclass made on the fly), so both
``except RayTaskError`` and ``except ValueError`` catch it; its message carries the remote
traceback.
"""

from __future__ import annotations


class RayError(Exception):
    """Base class of every Quanta error."""


QuantaError = RayError


class RaySystemError(RayError):
    """An internal failure of the runtime."""


class RayTaskError(RayError):
    """A task raised an exception. ``cause`` is the original exception (when it unpickles)."""

    def __init__(
        self,
        function_name: str = "",
        traceback_str: str = "",
        cause: BaseException | None = None,
        pid: int | None = None,
        ip: str | None = None,
    ) -> None:
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.pid = pid
        self.ip = ip
        super().__init__(self._message())

    def _message(self) -> str:
        head = f"{type(self.cause).__name__ if self.cause is not None else 'Error'}"
        where = f" (pid={self.pid}, ip={self.ip})" if self.pid else ""
        return (
            f"{head}: task {self.function_name}(){where} failed:\n{self.traceback_str.rstrip()}"
        )

    def __str__(self) -> str:
        return self._message()

    def __reduce__(self):
        return (RayTaskError, (self.function_name, self.traceback_str, self.cause, self.pid,
                               self.ip))

    def as_instanceof_cause(self) -> RayTaskError:
        """Return an error that is both a RayTaskError and an instance of the cause's class."""
        cause_cls = type(self.cause) if self.cause is not None else None
        if cause_cls is None or issubclass(cause_cls, RayTaskError):
            return self
        if not issubclass(cause_cls, Exception):
            return self
        try:
            cls = _dual_classes[cause_cls]
        except KeyError:
            try:
                cls = type(
                    f"RayTaskError({cause_cls.__name__})",
                    (RayTaskError, cause_cls),
                    {"__init__": _dual_init, "__str__": RayTaskError.__str__,
                     "__reduce__": RayTaskError.__reduce__},
                )
            except TypeError:
                return self
            _dual_classes[cause_cls] = cls
        err = cls.__new__(cls)
        _dual_init(err, self.function_name, self.traceback_str, self.cause, self.pid, self.ip)
        return err


_dual_classes: dict[type, type] = {}


def _dual_init(self, function_name, traceback_str, cause, pid, ip):
    self.function_name = function_name
    self.traceback_str = traceback_str
    self.cause = cause
    self.pid = pid
    self.ip = ip
    if cause is not None:
        self.__dict__.update({k: v for k, v in getattr(cause, "__dict__", {}).items()
                              if k not in self.__dict__})
        try:
            self.args = cause.args
        except Exception:
            pass


class TaskCancelledError(RayError):
    """The task was cancelled with ``cancel`` before or while it ran."""

    def __init__(self, task_id: str | None = None, message: str | None = None) -> None:
        self.task_id = task_id
        super().__init__(message or f"Task {task_id} was cancelled.")

    def __reduce__(self):
        return (TaskCancelledError, (self.task_id, str(self)))


class GetTimeoutError(RayError, TimeoutError):
    """``get`` or ``wait`` ran out of time."""


class WorkerCrashedError(RayError):
    """The worker running the task died unexpectedly (and retries, if any, ran out)."""


class ObjectLostError(RayError):
    """Every copy of the object is gone and it cannot be rebuilt."""

    def __init__(self, object_ref_hex: str = "", message: str = "") -> None:
        self.object_ref_hex = object_ref_hex
        super().__init__(message or f"Object {object_ref_hex} is lost.")

    def __reduce__(self):
        return (type(self), (self.object_ref_hex, str(self)))


class ObjectReconstructionFailedError(ObjectLostError):
    """The object was lost and rebuilding it from its lineage failed."""


class ObjectReconstructionFailedMaxAttemptsExceededError(ObjectReconstructionFailedError):
    """The object was lost and the task that made it has no retries left to run again."""


class OwnerDiedError(ObjectLostError):
    """The process that owned the object died, so the object is gone."""


class ObjectFetchTimedOutError(ObjectLostError):
    """The object could not be fetched in time."""


class ReferenceCountingAssertionError(ObjectLostError):
    """An object was used after it was freed."""


class ObjectStoreFullError(RayError):
    """An object fits neither in the node's shared-memory store (``/dev/shm``) nor in its spill
    directory on disk (raised by ``put`` and for a task's large return value). The message
    names the bytes asked for, the bytes free in both directories and what to change."""


class OutOfMemoryError(RayError):
    """A task was killed because the node ran out of memory."""


class NodeDiedError(RayError):
    """The node running the task died."""


class LocalRayletDiedError(RayError):
    """The node daemon this process is connected to (Ray's "local raylet") died or exited.

    Raised by every pending ``get``/``wait``, actor call and task of a driver whose daemon
    connection closed, and at once by every later API call of that driver (``.remote()``,
    ``put``, ``get`` of a ref not ready, ``wait``, actor creation) until ``shutdown()``.
    The message says which daemon (its pid when known) and where its log is."""

    def __init__(self, message: str = "The node daemon (local raylet) died.") -> None:
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (str(self),))


class RayActorError(RayError):
    """An actor is dead or cannot be reached."""


class ActorDiedError(RayActorError):
    """The actor died; the message says why (killed, owner exited, constructor raised ...)."""

    def __init__(self, message: str = "The actor died.", actor_id: str | None = None) -> None:
        super().__init__(message)
        self.actor_id = actor_id
        self.error_msg = message

    def __reduce__(self):
        return (type(self), (self.error_msg, self.actor_id))


class ActorUnavailableError(RayActorError):
    """The actor is temporarily unreachable (for instance restarting)."""


class ActorAlreadyExistsError(ValueError, RayError):
    """An actor with this name already exists in the namespace."""


class ActorUnschedulableError(RayError):
    """No node can ever host the actor."""


class TaskUnschedulableError(RayError):
    """No node can ever run the task with the resources it asks for."""


class RuntimeEnvSetupError(RayError):
    """The task's runtime environment could not be built."""


class PendingCallsLimitExceeded(RayError):
    """Too many calls are pending on an actor."""


class CrossLanguageError(RayError):
    """Not supported by Quanta; kept so imports of Ray's names work."""


class RaySystemStartupError(RaySystemError):
    """The node daemon or a worker failed to start."""


__all__ = [name for name, obj in list(globals().items())
           if isinstance(obj, type) and issubclass(obj, BaseException)]
