"""The head's control-plane gRPC server (``ControlStore`` in ``quanta/_proto/control.proto``).

gRPC runs its handlers on its own thread pool; the daemon's state belongs to its reactor
thread. Every handler therefore hands its work to the reactor (``call_soon_threadsafe``) and
waits for the answer, so the tables are only ever touched on one thread. Calls must carry the
cluster token (``cluster_token.METADATA_KEY``); others are refused with ``UNAUTHENTICATED``
before any handler runs. With TLS (``--tls-*``, see ``tls.py``) the port is mutual TLS:
clients present a certificate of the cluster's CA, and the token is checked on top.

grpc is imported only here and in ``head_link.py``: a plain ``quanta.init()`` never loads it.
"""

from __future__ import annotations

import threading
from concurrent import futures
from typing import Any

import grpc

import quanta
from quanta._private import cluster_token
from quanta._private.control_client import node_from_pb, node_to_pb
from quanta._proto import control_pb2 as pb
from quanta._proto import control_pb2_grpc as pb_grpc


class _TokenCheck(grpc.ServerInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

        def refuse(request: Any, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          "wrong or missing cluster token: pass the head's token with --token "
                          f"(or ${cluster_token.ENV_VAR}); on the head's machine it is in "
                          f"<session>/{cluster_token.FILE_NAME}")

        self._refuse = grpc.unary_unary_rpc_method_handler(refuse)

    def intercept_service(self, continuation, handler_call_details):
        presented = dict(handler_call_details.invocation_metadata or ()).get(
            cluster_token.METADATA_KEY)
        if cluster_token.check(self._token, presented):
            return continuation(handler_call_details)
        return self._refuse


class ControlService(pb_grpc.ControlStoreServicer):
    """Serves the head daemon's membership table and cluster facts."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon

    def _on_reactor(self, fn: Any, *args: Any) -> Any:
        done = threading.Event()
        box: list = []

        def run() -> None:
            try:
                box.append((True, fn(*args)))
            except BaseException as e:  # noqa: BLE001 - re-raised on the gRPC thread
                box.append((False, e))
            done.set()

        self.daemon.reactor.call_soon_threadsafe(run)
        if not done.wait(30):
            raise TimeoutError("the head's event loop did not answer within 30 s")
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def GetClusterInfo(self, request, context):  # noqa: N802 - gRPC's method names
        d = self.daemon
        head = self._on_reactor(lambda: d.membership.nodes.get(d.node_id))
        return pb.ClusterInfo(cluster_id=d.cluster_id, version=quanta.__version__,
                              head=node_to_pb(head or {}))

    def RegisterNode(self, request, context):  # noqa: N802
        info = node_from_pb(request.node)
        if not info["node_id"]:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "RegisterNode: node.node_id is empty")
        info["is_head"] = False
        alive = self._on_reactor(self.daemon.node_joined, info)
        from quanta._private.node.membership import DEAD_AFTER_S, HEARTBEAT_PERIOD_S

        return pb.RegisterNodeReply(cluster_id=self.daemon.cluster_id,
                                    heartbeat_period_s=HEARTBEAT_PERIOD_S,
                                    dead_after_s=DEAD_AFTER_S,
                                    nodes=[node_to_pb(r) for r in alive])

    def ReportHeartbeat(self, request, context):  # noqa: N802
        def report() -> tuple[bool, list[dict[str, Any]]]:
            membership = self.daemon.membership
            pending = [{"shape": dict(d.shape), "count": d.count} for d in request.pending]
            return membership.heartbeat(request.node_id, dict(request.available), pending), \
                membership.reporting()

        known, alive = self._on_reactor(report)
        return pb.HeartbeatReply(known=known, nodes=[node_to_pb(r) for r in alive])

    def UnregisterNode(self, request, context):  # noqa: N802
        self._on_reactor(self.daemon.node_left, request.node_id,
                         request.reason or "left the cluster")
        return pb.UnregisterNodeReply()

    def ListNodes(self, request, context):  # noqa: N802
        recs = self._on_reactor(self.daemon.membership.all)
        return pb.ListNodesReply(nodes=[node_to_pb(r) for r in recs])


    def ExportFunction(self, request, context):  # noqa: N802
        self._on_reactor(self.daemon.control.export_function, request.function_id,
                         request.blob)
        return pb.ExportFunctionReply()

    def GetFunction(self, request, context):  # noqa: N802
        def lookup() -> bytes | None:
            try:
                return self.daemon.control.get_function(request.function_id)
            except KeyError:
                return None

        blob = self._on_reactor(lookup)
        return pb.GetFunctionReply(found=blob is not None, blob=blob or b"")


def start_server(daemon: Any, host: str, port: int, token: str,
                 tls: Any = None) -> tuple[grpc.Server, int]:
    """Serve ``ControlStore`` on ``host:port`` (0 picks a free port), over mutual TLS when
    ``tls`` (a ``TLSConfig``) is given. Returns the server and the bound port; raises OSError
    when the address cannot be bound."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4,
                                                    thread_name_prefix="quanta-control"),
                         interceptors=[_TokenCheck(token)],
                         options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_ControlStoreServicer_to_server(ControlService(daemon), server)
    try:
        if tls is None:
            bound = server.add_insecure_port(f"{host}:{port}")
        else:
            bound = server.add_secure_port(f"{host}:{port}", tls.grpc_server_credentials())
    except RuntimeError as e:  # grpc raises RuntimeError when it cannot bind
        raise OSError(f"cannot listen on {host}:{port}: {e}") from None
    if not bound:
        raise OSError(f"cannot listen on {host}:{port}")
    server.start()
    return server, bound
