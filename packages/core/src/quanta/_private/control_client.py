"""A client of the head's control-plane gRPC service, for node daemons, the CLI and drivers.

Errors come back as Python exceptions that say what to do: a refused token is
:class:`TokenRejected` (a ``PermissionError``), an unreachable head a ``ConnectionError``.

TLS: a client given a ``TLSConfig`` (``tls=``; by default :func:`quanta._private.tls.local`,
the environment's or this machine's ``quanta start`` settings) opens a mutual-TLS channel
(``grpc.ssl_channel_credentials``); a node daemon passes its own (or ``tls=False`` for none).
"""

from __future__ import annotations

from typing import Any

import grpc

from quanta._private import cluster_token
from quanta._proto import control_pb2 as pb
from quanta._proto import control_pb2_grpc as pb_grpc

_FIELDS = ("node_id", "daemon_address", "node_ip", "hostname", "is_head", "state",
           "registered_at", "last_heartbeat", "death_reason", "pid", "session_dir",
           "node_address")


def node_to_pb(rec: dict[str, Any]) -> pb.NodeInfo:
    """A membership record (see ``node/membership.py``) as a ``NodeInfo`` message."""
    msg = pb.NodeInfo(**{k: rec[k] for k in _FIELDS if rec.get(k) is not None})
    msg.total.update(rec.get("total") or {})
    msg.available.update(rec.get("available") or {})
    msg.pending.extend(demands_to_pb(rec.get("pending") or []))
    return msg


def demands_to_pb(demands: list[dict[str, Any]]) -> list[pb.ResourceDemand]:
    """``[{"shape": {...}, "count": n}]`` as ``ResourceDemand`` messages."""
    out = []
    for d in demands:
        msg = pb.ResourceDemand(count=int(d["count"]))
        msg.shape.update(d["shape"])
        out.append(msg)
    return out


def node_from_pb(msg: pb.NodeInfo) -> dict[str, Any]:
    rec = {k: getattr(msg, k) for k in _FIELDS}
    rec["total"] = dict(msg.total)
    rec["available"] = dict(msg.available)
    rec["pending"] = [{"shape": dict(d.shape), "count": d.count} for d in msg.pending]
    return rec


class TokenRejected(PermissionError):
    """The head refused this process's cluster token."""


def _host_port(address: str) -> str:
    address = address[len("tcp://"):] if address.startswith("tcp://") else address
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r}: expected the head's HOST:PORT (its --port)")
    return f"{host}:{port}"


class ControlClient:
    """Calls on the head at ``address`` (``host:port``) with ``token``. Thread-safe.
    ``tls``: a ``TLSConfig``, False for cleartext, None (default) for ``tls.local()``."""

    def __init__(self, address: str, token: str | None, timeout: float = 5.0,
                 tls: Any = None) -> None:
        self.address = _host_port(address)
        self.timeout = timeout
        self._metadata = ((cluster_token.METADATA_KEY, token or ""),)
        if tls is None:
            from quanta._private import tls as _tls

            tls = _tls.local()
        self.tls = tls or None
        if self.tls is None:
            self._channel = grpc.insecure_channel(self.address)
        else:
            self._channel = grpc.secure_channel(self.address,
                                                self.tls.grpc_channel_credentials(),
                                                options=self.tls.grpc_channel_options())
        self._stub = pb_grpc.ControlStoreStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=timeout or self.timeout,
                                               metadata=self._metadata)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            detail = e.details() if hasattr(e, "details") else str(e)
            if code == grpc.StatusCode.UNAUTHENTICATED:
                raise TokenRejected(f"the head at {self.address} refused the cluster token: "
                                    f"{detail}") from None
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                how = ("over TLS: is it a TLS head whose CA signed our certificate, and does "
                       "its certificate name this address?" if self.tls is not None else
                       "in cleartext: if the head uses TLS, set QUANTA_TLS_CERT, "
                       "QUANTA_TLS_KEY and QUANTA_TLS_CA")
                raise ConnectionError(f"no Quanta head answers at {self.address} ({detail}); "
                                      "is one running there (`quanta start --head --port "
                                      f"{self.address.rpartition(':')[2]}`)? Tried {how}"
                                      ) from None
            raise RuntimeError(f"{method} on the head at {self.address} failed: "
                               f"{code}: {detail}") from None

    def cluster_info(self) -> pb.ClusterInfo:
        return self._call("GetClusterInfo", pb.GetClusterInfoRequest())

    def register_node(self, node: pb.NodeInfo) -> pb.RegisterNodeReply:
        return self._call("RegisterNode", pb.RegisterNodeRequest(node=node))

    def heartbeat(self, node_id: str, available: dict[str, float],
                  pending: list[dict[str, Any]] | None = None
                  ) -> tuple[bool, list[dict[str, Any]]]:
        """Report what is free and what waits (``[{"shape": {...}, "count": n}]``);
        returns (whether the head knows this node as alive, the alive nodes)."""
        req = pb.HeartbeatRequest(node_id=node_id)
        req.available.update(available)
        req.pending.extend(demands_to_pb(pending or []))
        reply = self._call("ReportHeartbeat", req)
        return reply.known, [node_from_pb(n) for n in reply.nodes]

    def export_function(self, fn_id: bytes, blob: bytes) -> None:
        self._call("ExportFunction", pb.ExportFunctionRequest(function_id=fn_id, blob=blob))

    def get_function(self, fn_id: bytes) -> bytes | None:
        """The exported blob of ``fn_id``, or None when nobody exported it."""
        reply = self._call("GetFunction", pb.GetFunctionRequest(function_id=fn_id))
        return reply.blob if reply.found else None

    def unregister_node(self, node_id: str, reason: str) -> None:
        self._call("UnregisterNode", pb.UnregisterNodeRequest(node_id=node_id, reason=reason))

    def list_nodes(self) -> list[dict[str, Any]]:
        return [node_from_pb(n) for n in self._call("ListNodes", pb.ListNodesRequest()).nodes]
