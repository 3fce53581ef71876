"""Exact resource arithmetic and per-node resource accounting.

Design
------
* **Fixed point.** Every amount is stored as an ``int`` count of 1/10000 units
  (:data:`RESOURCE_UNIT`), so ``0.1 + 0.2`` is exactly ``0.3`` and ten tasks of ``0.1`` CPU
  release exactly the ``1.0`` they took: no drift, no epsilon comparisons. An amount with more
  than four decimal places is rejected with a ``ValueError`` naming the resource and the value.
  Float noise in an otherwise 4-decimal value (``0.1 + 0.2 == 0.30000000000000004``) is
  forgiven and rounded; a real fifth decimal (``0.12345``) is not.
* **ResourceSet** is an immutable, hashable ``Mapping[str, float]`` of non-negative amounts
  with zero amounts dropped. Two requests with the same amounts are equal and hash equally, so
  a ResourceSet is usable as a scheduling key (a dict key grouping tasks with the same shape).
  ``memory`` and ``object_store_memory`` are in bytes; fixed point makes those big ints, which
  Python handles exactly.
* **validate_request** turns ``num_cpus / num_gpus / memory / resources`` options into a
  ResourceSet with Ray's rules and messages that name the option and the offending value.
* **NodeResources** is the ledger of one node. Scalar resources are plain counters; GPUs are
  also tracked *per instance* so that a fractional request lands on a single GPU (two 0.5
  requests share GPU 0, a third goes to GPU 1) and a whole request takes whole, fully free
  GPUs. Fractional requests use best fit (the fullest GPU that still has room) to keep whole
  GPUs free, as Ray does. An :class:`Allocation` records the GPU ids and fractions it got, for
  ``CUDA_VISIBLE_DEVICES`` / ``ray.get_gpu_ids()``.
* **Blocked workers.** A worker blocked in ``get``/``wait`` gives its CPUs back
  (:meth:`NodeResources.release_cpus`) so other tasks - often the ones it waits for - can run;
  its GPUs and custom resources stay held. When it resumes it takes its CPUs back
  unconditionally (:meth:`NodeResources.reacquire_cpus`), which may drive available CPU
  negative: the node is briefly oversubscribed, and :meth:`NodeResources.can_fit` refuses any
  CPU request until enough CPU work finishes. This is Ray's behaviour and avoids deadlock.

NodeResources is not thread-safe: the node's scheduler owns it and serialises access.
Standard library only.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

__all__ = [
    "RESOURCE_UNIT",
    "EMPTY",
    "Allocation",
    "NodeResources",
    "ResourceSet",
    "from_fixed",
    "to_fixed",
    "validate_request",
]

RESOURCE_UNIT = 10_000
"""Fixed-point scale: amounts are stored as integer multiples of 1/10000."""

CPU = "CPU"
GPU = "GPU"
MEMORY = "memory"

_RESERVED_IN_RESOURCES = {CPU: "num_cpus", GPU: "num_gpus", MEMORY: "memory"}


# --------------------------------------------------------------------------------------------
# fixed-point conversion


def _coerce_number(label: str, value: Any) -> int | float:
    """``value`` as an ``int`` or ``float``; TypeError naming ``label`` and the type given."""
    if isinstance(value, bool):
        raise TypeError(f"{label} must be a number, got bool ({value!r})")
    if isinstance(value, (int, float)):
        return value
    try:  # integer-likes such as numpy.int64
        return operator.index(value)
    except TypeError:
        pass
    import numbers  # lazily: rarely needed

    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"{label} must be a number, got {type(value).__name__} ({value!r})")


def to_fixed(label: str, value: Any) -> int:
    """``value`` in 1/10000 units, exactly. May be negative (callers check the sign).

    Raises ``TypeError`` for non-numbers (bools included) and ``ValueError`` for NaN, infinity
    or more than four decimal places; messages name ``label`` and ``value``.
    """
    v = _coerce_number(label, value)
    if isinstance(v, int):
        return v * RESOURCE_UNIT
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"{label}: amount {value!r} is not a finite number")
    if v.is_integer():
        return int(v) * RESOURCE_UNIT
    scaled = v * RESOURCE_UNIT
    units = round(scaled)
    if abs(scaled - units) > max(1e-6, abs(scaled) * 1e-14):
        raise ValueError(
            f"{label}: amount {value!r} has more than 4 decimal places; resource amounts "
            f"must be multiples of 0.0001"
        )
    return units


def from_fixed(units: int) -> float:
    """The float amount for ``units`` 1/10000 units (``20000 -> 2.0``, ``3000 -> 0.3``)."""
    q, r = divmod(units, RESOURCE_UNIT)
    if r == 0:
        return float(q)
    return units / RESOURCE_UNIT


def _format(units: int) -> str:
    q, r = divmod(units, RESOURCE_UNIT)
    return str(q) if r == 0 else repr(units / RESOURCE_UNIT)


def _check_name(name: Any) -> None:
    if not isinstance(name, str):
        raise TypeError(f"resource names must be str, got {type(name).__name__} ({name!r})")
    if not name:
        raise ValueError("resource names must be non-empty")


# --------------------------------------------------------------------------------------------
# ResourceSet


def _rebuild(units: dict[str, int]) -> ResourceSet:  # pickle support
    return ResourceSet._from_units(units)


class ResourceSet(Mapping[str, float]):
    """An immutable mapping from resource name to a non-negative amount.

    * Built from any mapping of name -> number (:meth:`from_dict` or the constructor);
      amounts are validated (non-negative, at most 4 decimals) and zero amounts are dropped.
    * ``rs["CPU"]`` is the float amount (``KeyError`` if absent); :meth:`amount` returns 0.0
      for an absent resource. Iteration is in sorted name order.
    * Arithmetic is exact: ``a + b``; ``a - b`` raises ``ValueError`` if any amount would go
      negative. ``a <= b`` / ``a.fits_in(b)``: every amount of ``a`` is at most that of ``b``.
    * Equal sets hash equally (usable as a scheduling key); comparing with a plain dict works.
    * ``repr`` is ``{CPU: 1, GPU: 0.5}``.
    """

    __slots__ = ("_units", "_hash")

    _units: dict[str, int]
    _hash: int | None

    def __init__(self, amounts: Mapping[str, Any] | None = None) -> None:
        units: dict[str, int] = {}
        if amounts:
            if not isinstance(amounts, Mapping):
                raise TypeError(
                    f"resources must be a mapping of name to amount, got {type(amounts).__name__}"
                )
            for name, value in amounts.items():
                _check_name(name)
                u = to_fixed(f"resource {name!r}", value)
                if u < 0:
                    raise ValueError(f"resource {name!r}: amount {value!r} must not be negative")
                if u:
                    units[name] = u
        self._units = dict(sorted(units.items()))
        self._hash = None

    @classmethod
    def from_dict(cls, amounts: Mapping[str, Any]) -> ResourceSet:
        """Same as ``ResourceSet(amounts)``."""
        return cls(amounts)

    @classmethod
    def _from_units(cls, units: Mapping[str, int]) -> ResourceSet:
        """Trusted constructor from fixed-point units (non-negative); zeros are dropped."""
        rs = cls.__new__(cls)
        rs._units = {k: v for k, v in sorted(units.items()) if v}
        rs._hash = None
        return rs

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self._units,))

    # -- mapping ------------------------------------------------------------------------------

    def __getitem__(self, name: str) -> float:
        return from_fixed(self._units[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._units)

    def __len__(self) -> int:
        return len(self._units)

    def __contains__(self, name: object) -> bool:
        return name in self._units

    def amount(self, name: str) -> float:
        """The amount of ``name``, 0.0 if absent."""
        return from_fixed(self._units.get(name, 0))

    def units(self, name: str) -> int:
        """The amount of ``name`` in 1/10000 units, 0 if absent."""
        return self._units.get(name, 0)

    def to_dict(self) -> dict[str, float]:
        """A new ``dict`` of name -> float amount; whole amounts as floats (``2.0``)."""
        return {k: from_fixed(v) for k, v in self._units.items()}

    def is_empty(self) -> bool:
        """True if no resource has a non-zero amount."""
        return not self._units

    # -- arithmetic ---------------------------------------------------------------------------

    def fits_in(self, other: ResourceSet) -> bool:
        """True if every amount here is at most the same resource's amount in ``other``."""
        ou = other._units
        return all(v <= ou.get(k, 0) for k, v in self._units.items())

    def __le__(self, other: object) -> bool:
        if not isinstance(other, ResourceSet):
            return NotImplemented
        return self.fits_in(other)

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, ResourceSet):
            return NotImplemented
        return other.fits_in(self)

    def __add__(self, other: object) -> ResourceSet:
        if not isinstance(other, ResourceSet):
            return NotImplemented
        units = dict(self._units)
        for k, v in other._units.items():
            units[k] = units.get(k, 0) + v
        return ResourceSet._from_units(units)

    def __sub__(self, other: object) -> ResourceSet:
        if not isinstance(other, ResourceSet):
            return NotImplemented
        units = dict(self._units)
        for k, v in other._units.items():
            have = units.get(k, 0)
            if v > have:
                raise ValueError(
                    f"cannot subtract {_format(v)} {k} from {_format(have)}: "
                    f"resource amounts must not go negative"
                )
            units[k] = have - v
        return ResourceSet._from_units(units)

    # -- identity -----------------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ResourceSet):
            return self._units == other._units
        if isinstance(other, Mapping):
            try:
                return self._units == ResourceSet(other)._units
            except (TypeError, ValueError):
                return False
        return NotImplemented

    def __hash__(self) -> int:
        h = self._hash
        if h is None:
            h = self._hash = hash(tuple(self._units.items()))
        return h

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k}: {_format(v)}" for k, v in self._units.items()) + "}"


EMPTY = ResourceSet()
"""The empty ResourceSet."""


# --------------------------------------------------------------------------------------------
# request validation


def _option_units(label: str, value: Any) -> int:
    units = to_fixed(label, value)
    if units < 0:
        raise ValueError(f"{label} must not be negative, got {value!r}")
    return units


def _check_whole_above_one(label: str, value: Any, units: int, what: str) -> None:
    if units > RESOURCE_UNIT and units % RESOURCE_UNIT:
        raise ValueError(
            f"{label}={value!r} is invalid: {what} amounts greater than 1 must be whole "
            f"numbers (fractions are only allowed below 1, to share one instance)"
        )


def validate_request(
    num_cpus: Any = None,
    num_gpus: Any = None,
    memory: Any = None,
    resources: Mapping[str, Any] | None = None,
    *,
    default_cpus: float,
) -> ResourceSet:
    """The ResourceSet a task or actor asks for, validated with Ray's rules.

    * ``num_cpus``: CPUs, any non-negative amount with at most 4 decimals; ``None`` means
      ``default_cpus`` (1 for tasks; the caller decides for actors).
    * ``num_gpus``: GPUs; an amount above 1 must be whole (``0.5`` and ``2`` are valid,
      ``1.5`` is not).
    * ``memory``: bytes of memory, a whole number.
    * ``resources``: custom resources, name -> amount; like GPUs, amounts above 1 must be
      whole. ``CPU``, ``GPU`` and ``memory`` are refused here (use the options).

    Zero amounts are dropped. Raises ``TypeError`` for a value of the wrong type (naming the
    option and the type given) and ``ValueError`` for a negative amount, more than 4 decimals,
    a non-whole amount above 1 where that is not allowed, or a reserved name in ``resources``.
    """
    units: dict[str, int] = {}

    cpus_label = "default_cpus" if num_cpus is None else "num_cpus"
    cpus = default_cpus if num_cpus is None else num_cpus
    units[CPU] = _option_units(cpus_label, cpus)

    if num_gpus is not None:
        u = _option_units("num_gpus", num_gpus)
        _check_whole_above_one("num_gpus", num_gpus, u, "GPU")
        units[GPU] = u

    if memory is not None:
        u = _option_units("memory", memory)
        if u % RESOURCE_UNIT:
            raise ValueError(f"memory is in bytes and must be a whole number, got {memory!r}")
        units[MEMORY] = u

    if resources is not None:
        if not isinstance(resources, Mapping):
            raise TypeError(
                f"resources must be a dict of resource name to amount, "
                f"got {type(resources).__name__}"
            )
        for name, value in resources.items():
            if not isinstance(name, str):
                raise TypeError(f"resources keys must be str, got {type(name).__name__} ({name!r})")
            if not name:
                raise ValueError("resources keys must be non-empty resource names")
            option = _RESERVED_IN_RESOURCES.get(name)
            if option is not None:
                raise ValueError(
                    f"resources={{{name!r}: ...}} is not allowed: use the {option}= option "
                    f"instead of the {name!r} key in resources"
                )
            label = f"resources[{name!r}]"
            u = _option_units(label, value)
            _check_whole_above_one(label, value, u, f"custom resource {name!r}")
            units[name] = u

    return ResourceSet._from_units(units)


# --------------------------------------------------------------------------------------------
# node accounting


class Allocation:
    """Resources granted to one task or actor by :meth:`NodeResources.allocate`.

    Attributes:
        resources: the ResourceSet that was requested and granted.
        gpu_ids: ids of the GPUs assigned (whole GPUs first, in index order, then the one
            holding a fractional share); empty if no GPU was requested.
        gpu_fractions: GPU id -> share of that GPU (``1.0`` for a whole GPU).

    Only the :class:`NodeResources` that made it may release it, once.
    """

    __slots__ = (
        "resources",
        "gpu_ids",
        "gpu_fractions",
        "_gpu_units",
        "_owner",
        "_released",
        "_cpus_released",
    )

    def __init__(
        self,
        resources: ResourceSet,
        gpu_picks: list[tuple[int, int]],
        gpu_id_of: list[int],
        owner: NodeResources,
    ) -> None:
        self.resources = resources
        self._gpu_units = gpu_picks  # (instance index, units)
        self.gpu_ids: list[int] = [gpu_id_of[i] for i, _ in gpu_picks]
        self.gpu_fractions: dict[int, float] = {gpu_id_of[i]: from_fixed(u) for i, u in gpu_picks}
        self._owner = owner
        self._released = False
        self._cpus_released = False

    @property
    def released(self) -> bool:
        """True once :meth:`NodeResources.release` has returned everything."""
        return self._released

    @property
    def cpus_released(self) -> bool:
        """True while the CPUs are lent back (:meth:`NodeResources.release_cpus`)."""
        return self._cpus_released

    def __repr__(self) -> str:
        state = " released" if self._released else (" cpus-released" if self._cpus_released else "")
        return f"Allocation({self.resources!r}, gpu_ids={self.gpu_ids}{state})"


def _lent_when_blocked(name: str) -> bool:
    """Whether a blocked worker lends ``name`` back: CPUs, plain or in a bundle."""
    return name == CPU or name.startswith("CPU_group_")


class NodeResources:
    """The resource ledger of one node.

    ``total`` is what the node has. ``GPU`` in ``total`` must be a whole number; ``gpu_ids``
    names its instances (default ``0 .. n-1``; e.g. the ids in ``CUDA_VISIBLE_DEVICES``) and
    must have exactly that many distinct ids.

    Not thread-safe: one owner (the node's scheduler) serialises calls.
    """

    __slots__ = ("_total", "_total_units", "_avail", "_gpu_ids", "_gpu_free")

    def __init__(self, total: ResourceSet, gpu_ids: list[int] | None = None) -> None:
        if not isinstance(total, ResourceSet):
            total = ResourceSet(total)
        gpu_units = total.units(GPU)
        if gpu_units % RESOURCE_UNIT:
            raise ValueError(f"a node's GPU total must be a whole number, got {total[GPU]!r}")
        n = gpu_units // RESOURCE_UNIT
        if gpu_ids is None:
            ids = list(range(n))
        else:
            ids = [operator.index(i) for i in gpu_ids]
            if len(ids) != n:
                raise ValueError(f"gpu_ids {ids} has {len(ids)} ids but the node has {n} GPUs")
            if len(set(ids)) != len(ids):
                raise ValueError(f"gpu_ids {ids} has duplicates")
        self._total: ResourceSet | None = total  # built from _total_units when None
        self._total_units: dict[str, int] = dict(total._units)
        self._avail: dict[str, int] = dict(total._units)
        self._gpu_ids = ids
        self._gpu_free = [RESOURCE_UNIT] * n

    # -- views --------------------------------------------------------------------------------

    @property
    def total(self) -> ResourceSet:
        """Everything the node has."""
        if self._total is None:
            self._total = ResourceSet._from_units(self._total_units)
        return self._total

    @property
    def available(self) -> ResourceSet:
        """What is free now. While CPU is oversubscribed (see :meth:`reacquire_cpus`) the CPU
        entry is clamped to 0 (absent); :meth:`available_amount` gives the signed figure."""
        return ResourceSet._from_units({k: v for k, v in self._avail.items() if v > 0})

    def available_of(self, names: Iterable[str]) -> ResourceSet:
        """What is free now of ``names`` only (clamped at 0, as :attr:`available`)."""
        avail = self._avail
        return ResourceSet._from_units({k: max(0, avail.get(k, 0)) for k in names})

    def total_of(self, names: Iterable[str]) -> ResourceSet:
        """The node's total of ``names`` only."""
        total = self._total_units
        return ResourceSet._from_units({k: total.get(k, 0) for k in names})

    def available_amount(self, name: str) -> float:
        """The free amount of ``name``; negative for CPU while oversubscribed."""
        return from_fixed(self._avail.get(name, 0))

    @property
    def gpu_ids(self) -> list[int]:
        """The node's GPU ids, in instance order."""
        return list(self._gpu_ids)

    def gpu_free(self) -> dict[int, float]:
        """GPU id -> free share of that GPU (``1.0`` = wholly free)."""
        return {gid: from_fixed(u) for gid, u in zip(self._gpu_ids, self._gpu_free, strict=True)}

    # -- GPU packing --------------------------------------------------------------------------

    def _pick_gpus(self, units: int) -> list[tuple[int, int]] | None:
        """Instances for a GPU request of ``units``: whole part on fully free GPUs (lowest
        index first), the fractional rest on one other GPU by best fit. None if impossible."""
        whole, frac = divmod(units, RESOURCE_UNIT)
        free = self._gpu_free
        picks: list[tuple[int, int]] = []
        if whole:
            for i, f in enumerate(free):
                if f == RESOURCE_UNIT:
                    picks.append((i, RESOURCE_UNIT))
                    if len(picks) == whole:
                        break
            else:
                return None
        if frac:
            taken = {i for i, _ in picks}
            best = -1
            for i, f in enumerate(free):
                if f >= frac and i not in taken and (best < 0 or f < free[best]):
                    best = i
            if best < 0:
                return None
            picks.append((best, frac))
        return picks

    # -- queries ------------------------------------------------------------------------------

    def can_fit(self, req: ResourceSet) -> bool:
        """True if ``req`` fits in what is free now. A fractional GPU request must fit on one
        GPU; a whole one needs that many wholly free GPUs. A negative (oversubscribed) amount
        never fits a request for that resource."""
        avail = self._avail
        for name, u in req._units.items():
            if name == GPU:
                if self._pick_gpus(u) is None:
                    return False
            elif avail.get(name, 0) < u:
                return False
        return True

    def feasible(self, req: ResourceSet) -> bool:
        """True if ``req`` would fit on this node when nothing is allocated (otherwise it can
        never run here, whatever finishes)."""
        total = self._total_units
        for name, u in req._units.items():
            if name == GPU:
                whole, frac = divmod(u, RESOURCE_UNIT)
                if whole + (1 if frac else 0) > len(self._gpu_free):
                    return False
            elif total.get(name, 0) < u:
                return False
        return True

    # -- mutation -----------------------------------------------------------------------------

    def allocate(self, req: ResourceSet) -> Allocation | None:
        """Take ``req`` and return the :class:`Allocation`, or ``None`` (nothing changed) if it
        does not fit now."""
        avail = self._avail
        picks: list[tuple[int, int]] = []
        for name, u in req._units.items():
            if name == GPU:
                p = self._pick_gpus(u)
                if p is None:
                    return None
                picks = p
            elif avail.get(name, 0) < u:
                return None
        for name, u in req._units.items():
            avail[name] = avail.get(name, 0) - u
        for i, u in picks:
            self._gpu_free[i] -= u
        return Allocation(req, picks, self._gpu_ids, self)

    def _check(self, alloc: Allocation) -> None:
        if alloc._owner is not self:
            raise ValueError(f"{alloc!r} was not allocated by this node")
        if alloc._released:
            raise ValueError(f"{alloc!r} was already released")

    def release(self, alloc: Allocation) -> None:
        """Give back everything ``alloc`` holds (CPUs only if not currently lent back by
        :meth:`release_cpus`). Raises ``ValueError`` if ``alloc`` is not from this node or was
        already released."""
        self._check(alloc)
        avail = self._avail
        total = self._total_units
        for name, u in alloc.resources._units.items():
            if alloc._cpus_released and _lent_when_blocked(name):
                continue
            if name in total:  # a resource removed meanwhile (a placement group) stays gone
                avail[name] = avail.get(name, 0) + u
        for i, u in alloc._gpu_units:
            self._gpu_free[i] += u
        alloc._released = True
        alloc._cpus_released = False

    def add_resources(self, amounts: ResourceSet) -> None:
        """Add ``amounts`` to the node's total and free resources (a placement group's
        bundle resources, carved out of an allocation the group holds)."""
        total = self._total_units
        for name, u in amounts._units.items():
            total[name] = total.get(name, 0) + u
            self._avail[name] = self._avail.get(name, 0) + u
        self._total = None

    def remove_resources(self, names: list[str]) -> None:
        """Remove the resources ``names`` entirely (allocations holding them keep their
        numbers but give nothing back when released)."""
        total = self._total_units
        for name in names:
            total.pop(name, None)
            self._avail.pop(name, None)
        self._total = None

    def release_cpus(self, alloc: Allocation) -> bool:
        """Lend ``alloc``'s CPUs back while its worker is blocked (in ``get``/``wait``): its
        ``CPU``, and the CPUs it holds in a placement group's bundle (``CPU_group_*``), so a
        child can run in that bundle; GPUs and other resources stay held. Returns False (and
        does nothing) if they are already lent back. Raises ``ValueError`` for a foreign or
        released allocation."""
        self._check(alloc)
        if alloc._cpus_released:
            return False
        self._lend(alloc, 1)
        alloc._cpus_released = True
        return True

    def _lend(self, alloc: Allocation, sign: int) -> None:
        total = self._total_units
        for name, u in alloc.resources._units.items():
            if _lent_when_blocked(name) and name in total:  # a removed group's: gone
                self._avail[name] = self._avail.get(name, 0) + sign * u

    def reacquire_cpus(self, alloc: Allocation) -> bool:
        """Take ``alloc``'s CPUs back when its worker resumes, **unconditionally**: available
        CPU may go negative (temporary oversubscription, so a resumed task never waits behind
        the tasks it unblocked). Until enough CPU is released again, :meth:`can_fit` and
        :meth:`allocate` refuse every request that needs CPU. Returns False (and does nothing)
        if the CPUs were not lent back. Raises ``ValueError`` for a foreign or released
        allocation."""
        self._check(alloc)
        if not alloc._cpus_released:
            return False
        self._lend(alloc, -1)
        alloc._cpus_released = False
        return True

    def __repr__(self) -> str:
        avail = (
            "{"
            + ", ".join(
                f"{k}: {_format(v) if v >= 0 else '-' + _format(-v)}"
                for k, v in self._avail.items()
                if v
            )
            + "}"
        )
        return f"NodeResources(total={self.total!r}, available={avail})"
