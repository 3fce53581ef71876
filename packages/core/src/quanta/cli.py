"""The ``quanta`` command line: ``start``, ``stop``, ``status`` (as Ray's ``ray start --head``,
``ray stop``, ``ray status``), ``microbenchmark`` and ``plugins``."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quanta", description="Quanta command line")
    sub = parser.add_subparsers(dest="command", required=True)

    st = sub.add_parser(
        "start", help="start a node daemon on this machine (quanta start --head)",
        description="Start a Quanta node daemon that runs on its own, detached from this "
                    "shell, until `quanta stop`. Drivers connect to it with "
                    "quanta.init(address=\"auto\").")
    st.add_argument("--head", action="store_true", help="start the head node of a new cluster")
    st.add_argument("--address", default=None,
                    help="HOST:PORT of a head (its --port) to join as a member node")
    st.add_argument("--token-file", default=None, metavar="PATH",
                    help="a file holding the cluster's token (the head's "
                         "<session>/cluster_token). With --address: the token to join with "
                         "(default: $QUANTA_CLUSTER_TOKEN, or the token of the head recorded "
                         "on this machine). With --head: the token the head accepts (default: "
                         "$QUANTA_CLUSTER_TOKEN, or the one kept in its --storage, or a new "
                         "one)")
    st.add_argument("--token", default=None,
                    help="the cluster's token on the command line: visible to other users in "
                         "`ps`, prefer --token-file or $QUANTA_CLUSTER_TOKEN (kept for "
                         "compatibility)")
    st.add_argument("--num-cpus", type=float, default=None,
                    help="CPUs of the node (default: what this machine lets us use)")
    st.add_argument("--num-gpus", type=float, default=None, help="GPUs of the node (default 0)")
    st.add_argument("--resources", default=None,
                    help='custom resources as JSON, e.g. \'{"disk": 2}\'')
    st.add_argument("--memory", type=int, default=None,
                    help="bytes of memory for scheduling (default: this machine's)")
    st.add_argument("--object-store-memory", type=int, default=None,
                    help="bytes of the shared-memory object store (default: 30%% of memory)")
    st.add_argument("--port", type=int, default=6379,
                    help="with --head: the port of the control store's gRPC service, which "
                         "nodes join and drivers connect to (default 6379; 0 picks a free one)")
    st.add_argument("--node-manager-port", type=int, default=None,
                    help="the node's TCP port for other nodes (work, objects and actor "
                         "calls); default: a free one (a head restarted on its --storage "
                         "takes the one it had). With --port, a node listens on 2 ports")
    st.add_argument("--storage", default=None,
                    help="with --head: the control store's SQLite file, kept after `quanta "
                         "stop` so that a head started again on it finds its KV, jobs and "
                         "detached placement groups (default: a file in the session, deleted)")
    st.add_argument("--node-ip-address", default=None,
                    help="the address this node listens on and is known by (default "
                         "127.0.0.1: listening on a non-loopback address must be asked for)")
    st.add_argument("--tls-cert", default=None, metavar="PATH",
                    help="this node's TLS certificate (PEM, signed by the cluster's CA): "
                         "mutual TLS on the node port and the head's gRPC port. Give all "
                         "three --tls-* options on every node of the cluster")
    st.add_argument("--tls-key", default=None, metavar="PATH",
                    help="the certificate's private key (PEM; readable by you only)")
    st.add_argument("--tls-ca", default=None, metavar="PATH",
                    help="the cluster's CA certificate (PEM): peers must present a "
                         "certificate it signed")
    st.add_argument("--block", action="store_true",
                    help="stay in the foreground until the node stops (Ctrl-C stops it)")

    sp = sub.add_parser("stop", help="stop the cluster started with `quanta start`",
                        description="Stop this machine's member nodes (`quanta start "
                                    "--address`), then its head (`quanta start --head`).")
    sp.add_argument("--head-only", action="store_true",
                    help="stop the head only: this machine's member nodes keep running and "
                         "join the head again when it is restarted (on its --storage, with "
                         "the same --port)")
    sp.add_argument("--force", action="store_true",
                    help="kill its processes with SIGKILL at once instead of asking it to stop")
    sp.add_argument("--grace-period", type=float, default=10.0,
                    help="seconds to wait for the node to stop before SIGKILL (default 10)")

    ss = sub.add_parser("status", help="show the nodes, resources, workers, store and jobs")
    ss.add_argument("--json", action="store_true", help="print the raw status as JSON")

    mb = sub.add_parser("microbenchmark", help="time Ray's core microbenchmark workloads")
    mb.add_argument("--rounds", type=int, default=3, help="timed rounds per workload")
    mb.add_argument("--seconds", type=float, default=2.0, help="seconds per round")
    mb.add_argument("--only", action="append", default=None,
                    help="run workloads whose name contains this (repeatable)")
    pl = sub.add_parser(
        "plugins", help="list the installed plugins and the hooks they implement",
        description="List the Quanta plugins installed in this Python environment (entry "
                    "points of group 'quanta'): their distribution, version, whether this "
                    "process loads them (QUANTA_DISABLE_PLUGIN_AUTOLOAD, QUANTA_PLUGINS and "
                    "QUANTA_BLOCK_PLUGINS decide) and the hooks each loaded one implements. "
                    "Exits with 1 when a plugin fails to load.")
    pl.add_argument("--json", action="store_true", help="print the list as JSON")
    args = parser.parse_args(argv)
    if args.command == "start" and args.token is not None:
        _warn_token_in_argv(st, args, reexec=argv is None)
    if args.command == "start":
        return _start(st, args)
    if args.command == "stop":
        return _stop(args)
    if args.command == "status":
        return _status(args)
    if args.command == "plugins":
        return _plugins(args)
    if args.command == "microbenchmark":
        if args.rounds < 1:
            parser.error("--rounds must be >= 1")
        if args.seconds <= 0:
            parser.error("--seconds must be > 0")
        from quanta._private import microbenchmark

        microbenchmark.run(rounds=args.rounds, seconds=args.seconds, only=args.only)
    return 0


def _err(msg: str) -> None:
    print(f"quanta: {msg}", file=sys.stderr, flush=True)


def _warn_token_in_argv(parser: argparse.ArgumentParser, args: argparse.Namespace,
                        reexec: bool) -> None:
    """``--token T``: warn that other users see it in ``ps``; with ``--block`` (a process
    that stays), run this command again with the token moved into the environment, so that
    the blocking process's command line never holds it."""
    from quanta._private import cluster_token

    _read_token(parser, args)  # a bad token, or --token-file too: a usage error, here
    _err("warning: a token on the command line (--token) is visible to other users of this "
         "machine in `ps`; use --token-file PATH or set QUANTA_CLUSTER_TOKEN instead")
    if not (reexec and args.block):
        return
    argv = _argv_without_token(args.token)
    if argv is None:
        return
    env = dict(os.environ)
    env[cluster_token.ENV_VAR] = args.token
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)


def _argv_without_token(token: str) -> list[str] | None:
    """This process's full command line (interpreter, its options, the script or ``-m
    module``, the CLI's arguments) without ``--token T`` / ``--token=T``; None when it cannot
    be rebuilt without the token."""
    orig = list(getattr(sys, "orig_argv", []))
    ours = sys.argv[1:]
    if not orig or len(orig) < len(ours) or orig[len(orig) - len(ours):] != ours:
        return None
    prefix, kept, skip = orig[:len(orig) - len(ours)], [], False
    for a in ours:
        if skip:
            skip = False
        elif a == "--token":
            skip = True
        elif not a.startswith("--token="):
            kept.append(a)
    argv = [sys.executable, *prefix[1:], *kept]
    return None if any(token in a for a in argv) else argv


def _read_token(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    """The token given to ``quanta start``: ``--token``, else the file ``--token-file``
    names, else ``$QUANTA_CLUSTER_TOKEN``; None when none is. Exits with a usage error (naming
    where it came from) when it is not a valid token."""
    from quanta._private import cluster_token

    if args.token is not None:
        if args.token_file is not None:
            parser.error("give either --token or --token-file, not both")
        token, where = args.token, "--token"
    elif args.token_file is not None:
        try:
            with open(args.token_file) as f:
                token = f.read().strip()
        except OSError as e:
            parser.error(f"--token-file {args.token_file}: cannot read the token: "
                         f"{e.strerror or e}")
        where = f"--token-file {args.token_file}"
    elif os.environ.get(cluster_token.ENV_VAR):
        token, where = os.environ[cluster_token.ENV_VAR], f"${cluster_token.ENV_VAR}"
    else:
        return None
    try:
        return cluster_token.validate(token)
    except ValueError:
        parser.error(f"{where}: expected the cluster's token, at least 16 lowercase hex "
                     f"characters (the head's <session>/{cluster_token.FILE_NAME}), got "
                     f"{'an empty value' if not token else f'{len(token)} other characters'}")


# ------------------------------------------------------------------------------------------
# start
# ------------------------------------------------------------------------------------------
def _parse_resources(parser: argparse.ArgumentParser, text: str | None) -> dict[str, float]:
    if text is None:
        return {}
    try:
        res = json.loads(text)
    except ValueError as e:
        parser.error(f"--resources must be a JSON object, e.g. '{{\"disk\": 2}}': {e}")
    if not isinstance(res, dict):
        parser.error("--resources must be a JSON object of name -> amount, e.g. "
                     "'{\"disk\": 2}'")
    for name, amount in res.items():
        if name in ("CPU", "GPU", "memory", "object_store_memory"):
            parser.error(f"--resources must not contain {name!r}: use "
                         f"--{name.lower().replace('_', '-')}"
                         f"{'s' if name in ('CPU', 'GPU') else ''} instead")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
            parser.error(f"--resources: the amount of {name!r} must be a number >= 0, "
                         f"got {amount!r}")
    return {k: float(v) for k, v in res.items()}


def _start(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.head == (args.address is not None):
        parser.error("give either --head (start the head node of a new cluster) or "
                     "--address=HOST:PORT (join the cluster whose head listens there)")
    for name in ("num_cpus", "num_gpus", "memory", "object_store_memory"):
        value = getattr(args, name)
        if value is not None and value < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    for flag, value in (("--port", args.port), ("--node-manager-port", args.node_manager_port)):
        if value is not None and not 0 <= value < 65536:
            parser.error(f"{flag} must be between 0 and 65535, got {value}")
    resources = _parse_resources(parser, args.resources)

    from quanta import exceptions as exc
    from quanta._private import cluster, resource_detect

    storage = None
    if args.storage is not None:
        if not args.head:
            parser.error("--storage is for the head (--head): members keep no cluster state")
        storage = os.path.abspath(args.storage)
        if not os.path.isdir(os.path.dirname(storage)):
            parser.error(f"--storage {args.storage}: the directory {os.path.dirname(storage)} "
                         "does not exist")
    token = _read_token(parser, args)
    from quanta._private import tls

    try:  # passed on to the daemon (node_launcher reads them from the environment)
        config = tls.configure(args.tls_cert, args.tls_key, args.tls_ca)
    except tls.TLSConfigError as e:
        parser.error(str(e))
    if config is not None:
        os.environ.update(zip(tls.ENV_VARS, config.paths(), strict=True))
    memory = args.memory or resource_detect.detect_memory_bytes()
    store = args.object_store_memory or resource_detect.default_object_store_bytes(memory)
    cpus = resource_detect.detect_cpus() if args.num_cpus is None else args.num_cpus
    node_ip = args.node_ip_address or "127.0.0.1"
    try:
        if args.address is not None:
            proc, rec = cluster.start_member(
                head_address=args.address, token=token, num_cpus=cpus,
                num_gpus=args.num_gpus or 0, memory=memory, object_store_memory=store,
                resources=resources, node_ip=node_ip, node_port=args.node_manager_port)
            note = None
        else:
            proc, rec, note = cluster.start_head(
                num_cpus=cpus, num_gpus=args.num_gpus or 0, memory=memory,
                object_store_memory=store, resources=resources, node_ip=node_ip,
                port=args.port, token=token, storage=storage,
                node_port=args.node_manager_port)
    except ValueError as e:
        _err(str(e))
        return 2
    except cluster.ClusterError as e:
        _err(str(e))
        return 1
    except exc.RaySystemStartupError as e:
        _err(f"could not start the node: {e}")
        return 1
    except OSError as e:
        _err(f"could not start the node (cluster record {cluster.record_path()}): {e}")
        return 1
    if note:
        print(note)
    _print_started(rec, cpus, args.num_gpus or 0, memory, store, resources)
    if not args.block:
        return 0
    return _block(proc, rec)


def _print_started(rec: dict[str, Any], cpus: float, gpus: float, memory: int, store: int,
                   resources: dict[str, float]) -> None:
    from quanta._private import cluster

    res = [f"{_num(cpus)} CPU"] + ([f"{_num(gpus)} GPU"] if gpus else []) + [
        f"{_bytes(memory)} memory", f"{_bytes(store)} object store"] + [
        f"{_num(v)} {k}" for k, v in sorted(resources.items())]
    if rec.get("head_address"):
        print("\n".join([
            f"Started a Quanta node and joined the cluster of the head at {rec['head_address']}.",
            f"  Daemon:        pid {rec['pid']}, {rec['address']}",
            f"  Node id:       {rec['node_id']}",
            f"  Resources:     {', '.join(res)}",
            f"  Session dir:   {rec['session_dir']}",
            f"  Log:           {rec['log']}",
            "",
            "See the cluster with:  quanta status",
            "Stop this machine's nodes with:  quanta stop",
        ]), flush=True)
        return
    lines = [
        "Started a Quanta head node.",
        f"  Daemon:        pid {rec['pid']}, {rec['address']}",
    ]
    if rec.get("control_address"):
        lines.append(f"  Control store: {rec['control_address']} (gRPC; nodes join here)")
    lines += [
        f"  Resources:     {', '.join(res)}",
        f"  Session dir:   {rec['session_dir']}",
        f"  Log:           {rec['log']}",
        f"  Recorded in:   {cluster.record_path()}",
        "",
        "Connect a driver on this machine with:",
        "    import quanta",
        "    quanta.init(address=\"auto\")",
        "  or set QUANTA_ADDRESS=auto (RAY_ADDRESS works too) and call quanta.init().",
    ]
    if rec.get("control_address"):
        lines += [
            f"  quanta.init(address=\"{rec['control_address']}\") works too.",
            "",
            "Join another node to this cluster with:",
            f"    quanta start --address={rec['control_address']} "
            f"--token-file {rec['session_dir']}/cluster_token",
            "  (the file is readable by you only: copy it to the other machines, or set "
            "QUANTA_CLUSTER_TOKEN there)",
        ]
    lines += [
        "",
        "See the cluster with:  quanta status",
        "Stop it with:          quanta stop",
        "Stop the head only:    quanta stop --head-only  (this machine's members keep running)",
    ]
    print("\n".join(lines), flush=True)


def _block(proc: Any, rec: dict[str, Any]) -> int:
    """Stay in the foreground until the daemon exits; Ctrl-C or SIGTERM stops this node only
    (a member never stops its head or the other nodes of the machine; a head leaves the
    members, which wait for a head to join again)."""
    from quanta._private import cluster

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    what = "member node" if cluster.is_member_record(rec) else "head node"
    signal.signal(signal.SIGTERM, on_term)
    print(f"--block: staying in the foreground; Ctrl-C stops this {what}.", flush=True)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        how = cluster.stop_node(rec)
        if how is not None:
            print(f"Stopped the Quanta {what} (pid {rec['pid']}).", flush=True)
        try:
            proc.wait(5)
        except Exception:  # noqa: BLE001 - not our child any more, or already reaped
            pass
        return 0
    # Not stopped by `quanta stop` (which removes the record first): clean up after it.
    ours = cluster.stop_node(rec, force=True, timeout=0) is not None
    if ours:
        _err(f"the node daemon (pid {rec['pid']}) exited unexpectedly with code {code}; "
             f"see {rec['log']} (removed with the session)")
        return 1
    print(f"The Quanta {what} (pid {rec['pid']}) has stopped.", flush=True)
    return 0


# ------------------------------------------------------------------------------------------
# stop
# ------------------------------------------------------------------------------------------
def _stop(args: argparse.Namespace) -> int:
    from quanta._private import cluster

    try:
        rec, how, members = cluster.stop(force=args.force, timeout=max(0.0, args.grace_period),
                                         head_only=args.head_only)
    except OSError as e:
        _err(f"could not stop the cluster recorded in {cluster.record_path()}: {e}")
        return 1
    for mrec, mhow in members:
        what = {"stale": "was no longer running; removed its leftover files",
                "stopped": "stopped", "killed": "killed with SIGKILL"}[mhow]
        print(f"Member node (pid {mrec['pid']}, head {mrec.get('head_address')}): {what}.")
    if rec is None and members:
        return 0
    if rec is None:
        print("No Quanta cluster is running (nothing recorded in "
              f"{cluster.record_path()}).")
        return 0
    if args.head_only and cluster.read_members():
        print("This machine's member nodes keep running: they join the head again when it "
              "is started again at the same --port (on its --storage, so that it knows them "
              "and their detached actors).")
    where = f"pid {rec['pid']}, {rec['address']}"
    if how == "stale":
        print(f"The recorded Quanta cluster ({where}) was no longer running; removed its "
              "record and leftover files.")
    elif how == "stopped":
        print(f"Stopped the Quanta cluster ({where}): its daemon, zygote and workers, and "
              f"its session files ({rec.get('session_dir')}).")
    else:
        print(f"Killed the Quanta cluster ({where}) with SIGKILL"
              f"{'' if args.force else ' (it did not stop when asked)'}; removed its "
              "session files.")
    return 0


# ------------------------------------------------------------------------------------------
# status
# ------------------------------------------------------------------------------------------
def _status(args: argparse.Namespace) -> int:
    from quanta._private import cluster

    rec = cluster.read_record()
    if rec is None:
        _err("no Quanta cluster is running on this machine (nothing recorded in "
             f"{cluster.record_path()}). Start one with `quanta start --head`.")
        return 1
    try:
        status = cluster.rpc(rec["address"], "status", timeout=5.0)
    except Exception as e:  # noqa: BLE001 - any failure: not running
        state = cluster.cluster_state(rec)[0]
        if state == "dead":
            _err(f"no Quanta cluster is running: the one recorded in {cluster.record_path()} "
                 f"(daemon pid {rec['pid']}) is gone. `quanta stop` removes the stale record.")
        else:
            _err(f"the Quanta node daemon (pid {rec['pid']}) at {rec['address']} does not "
                 f"answer: {e}. `quanta stop --force` stops it.")
        return 1
    members = _cluster_nodes(rec)
    if members is not None:
        status["cluster_nodes"] = members
    if args.json:
        print(json.dumps({"cluster": rec, **status}, indent=1, default=str))
        return 0
    print(format_status(rec, status))
    return 0


def _cluster_nodes(rec: dict[str, Any]) -> list[dict[str, Any]] | str | None:
    """The head's membership table (alive and dead nodes), an error text, or None when the
    head serves no control store."""
    if not rec.get("control_address"):
        return None
    from quanta._private import cluster
    from quanta._private.control_client import ControlClient

    try:
        with ControlClient(rec["control_address"], cluster.local_token()) as client:
            return client.list_nodes()
    except Exception as e:  # noqa: BLE001 - shown instead of the table
        return f"cannot list the cluster's nodes: {e}"


def format_status(rec: dict[str, Any], status: dict[str, Any]) -> str:
    node = status["node"]
    total = node.get("Resources", {})
    avail = status.get("available", {})
    out = ["======== Quanta cluster status " + time.strftime("%Y-%m-%d %H:%M:%S") + " ========",
           f"Daemon: pid {rec['pid']}, {rec['address']}"
           + (f", control store {rec['control_address']}" if rec.get("control_address")
              else ""),
           f"Session: {node.get('SessionDir', rec.get('session_dir'))}",
           "",
           "Nodes",
           "-" * 60]
    members = status.get("cluster_nodes")
    if isinstance(members, list):
        alive = [n for n in members if n["state"] == "ALIVE"]
        out.append(f" {len(alive)} alive, {len(members) - len(alive)} dead")
        for n in members:
            t, a = n.get("total") or {}, n.get("available") or {}
            cpu = (f"{_num(t.get('CPU', 0) - a.get('CPU', 0), 1)}/{_num(t.get('CPU', 0), 1)} "
                   "CPU" if n["state"] == "ALIVE" else f"{_num(t.get('CPU', 0), 1)} CPU")
            role = "head" if n.get("is_head") else "member"
            line = (f"  {n['state']:<5} {n['node_id'][:12]}  {role:<6} {n.get('node_ip')} "
                    f"({n.get('hostname')})  {cpu}")
            if n.get("state") != "ALIVE" and n.get("death_reason"):
                line += f"  [{n['death_reason']}]"
            out.append(line)
    else:
        if isinstance(members, str):
            out.append(f" ({members})")
        out.append(f" 1 alive: {node['NodeID'][:12]}  {node.get('NodeManagerAddress')} "
                   f"({node.get('NodeManagerHostname')})")
    out += ["",
            "Resources of this node (used / total)",
            "-" * 60]
    from quanta._private.node.placement_groups import pg_of_resource

    for name in sorted(total, key=lambda k: (k not in ("CPU", "GPU", "memory",
                                                       "object_store_memory"), k)):
        if name.startswith("node:") or pg_of_resource(name):
            continue  # a group's own resources: summed up under "Placement groups"
        t = total[name]
        used = t - avail.get(name, 0.0)
        if name in ("memory", "object_store_memory"):
            out.append(f" {_bytes(used)}/{_bytes(t)} {name}")
        else:
            out.append(f" {_num(used, 1)}/{_num(t, 1)} {name}")
    demands = status.get("pending_demands")
    if demands is None:  # a daemon from before cluster-wide demands
        demands = [{"shape": shape, "count": 1} for shape in status.get("pending_leases") or []]
    waiting_tasks = sum(d["count"] for d in demands)
    out += ["",
            f"Workers: {status.get('workers', 0)} ({status.get('idle_workers', 0)} idle) on "
            "this node",
            "",
            "Pending demands",
            "-" * 60,
            f" {waiting_tasks} lease request(s) waiting for resources" if demands else
            " (none)"]
    for d in sorted(demands, key=lambda d: -d["count"])[:10]:
        shape = {k: v for k, v in d["shape"].items() if not pg_of_resource(k)}
        group = " in a placement group" if len(shape) < len(d["shape"]) else ""
        out.append(f"  {d['count']} x {shape}{group}")
    actors = status.get("actors")
    if actors is not None:
        states = actors.get("states") or {}
        out += ["",
                "Actors",
                "-" * 60,
                " " + (", ".join(f"{n} {state.lower()}" for state, n in sorted(states.items()))
                       or "(none)")]
        for a in actors.get("waiting", [])[:10]:
            name = f" {a['name']!r}" if a.get("name") else ""
            out.append(f"  {a['state']} {a['class_name']}{name} needs {a['resources']} "
                       f"({a['strategy']})")
    waiting = status.get("pending_placement_groups") or []
    infeasible = [g for g in waiting if g.get("reason")]
    out += ["",
            "Placement groups",
            "-" * 60,
            f" {status.get('created_placement_groups', 0)} created, {len(waiting)} pending "
            f"({len(infeasible)} can never be reserved)"]
    for g in waiting[:10]:
        bundles = list(g.get("bundles", {}).values())
        name = f" {g['name']!r}" if g.get("name") else ""
        line = f"  PENDING {g['placement_group_id'][:12]}{name} {g['strategy']} {bundles}"
        if g.get("reason"):
            line += f"  [infeasible: {g['reason']}]"
        out.append(line)
    st = status.get("store", {})
    out += ["",
            "Object store",
            "-" * 60,
            f" {st.get('num_objects', 0)} objects: {_bytes(st.get('used_bytes', 0))} of "
            f"{_bytes(st.get('capacity_bytes', 0))} in shared memory, "
            f"{_bytes(st.get('spilled_bytes', 0))} spilled to disk",
            "",
            "Jobs",
            "-" * 60]
    jobs = sorted(status.get("jobs") or [], key=lambda j: j.get("start_time", 0))
    running = [j for j in jobs if not j.get("is_dead")]
    out.append(f" {len(running)} running, {len(jobs) - len(running)} finished"
               if jobs else " (none)")
    for j in jobs[-10:]:
        started = time.strftime("%H:%M:%S", time.localtime(j.get("start_time", 0)))
        state = "FINISHED" if j.get("is_dead") else "RUNNING"
        out.append(f" {j.get('job_id')}  {state:<8}  driver pid {j.get('driver_pid')}  "
                   f"started {started}")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------
# plugins
# ------------------------------------------------------------------------------------------
# What each status means, for the notes under the table (the variables are read by this very
# process, as by any driver or daemon started from the same shell).
_PLUGIN_STATUS = {
    "QUANTA_DISABLE_PLUGIN_AUTOLOAD": "disabled",
    "QUANTA_BLOCK_PLUGINS": "blocked",
    "QUANTA_PLUGINS": "not selected",
}
_PLUGIN_NOTES = {
    "disabled": "disabled: QUANTA_DISABLE_PLUGIN_AUTOLOAD is set, so no entry-point plugin is "
                "loaded",
    "blocked": "blocked: named in QUANTA_BLOCK_PLUGINS",
    "not selected": "not selected: QUANTA_PLUGINS is set and does not name it",
    "failed": "failed: importing or registering it raised an error (below); block it with "
              "QUANTA_BLOCK_PLUGINS=NAME to load the others",
    "not loaded": "not loaded: another plugin failed to load, so none was",
}


def plugin_rows() -> tuple[list[dict[str, Any]], str | None]:
    """One dict per plugin (installed entry points, then plugins registered in-process), and
    the message of the error that stopped the plugins from loading, if any."""
    from quanta.plugins import manager

    error: manager.PluginLoadError | None = None
    loaded: dict[str, Any] = {}
    try:
        loaded = {info.name: info for info in manager.list_plugins()}
    except manager.PluginLoadError as e:
        error = e
    rows = []
    for ep in manager.installed_plugins():
        info = loaded.pop(ep.name, None)
        if ep.skipped_by is not None:
            status = _PLUGIN_STATUS[ep.skipped_by]
        elif info is not None:
            status = "loaded"
        elif error is not None:
            status = "failed" if error.plugin == ep.name else "not loaded"
        else:  # installed after the entry points were read: cannot happen in a fresh process
            status = "not loaded"
        rows.append({"name": ep.name, "status": status, "distribution": ep.distribution,
                     "version": ep.version, "entry_point": ep.value,
                     "hooks": info.hooks if info is not None else None})
    for info in loaded.values():  # registered in-process (by another plugin, say)
        rows.append({"name": info.name, "status": "loaded", "distribution": info.distribution,
                     "version": info.version, "entry_point": None, "hooks": info.hooks})
    return rows, (str(error) if error is not None else None)


def _plugins(args: argparse.Namespace) -> int:
    rows, error = plugin_rows()
    if args.json:
        print(json.dumps({"entry_point_group": "quanta", "plugins": rows, "error": error},
                         indent=1))
    else:
        print(format_plugins(rows))
    if error is not None:
        _err(f"plugins could not be loaded: {error}")
        return 1
    return 0


def format_plugins(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ("No Quanta plugins are installed (no entry points of group 'quanta' in "
                f"{sys.prefix}).")
    table = [("NAME", "STATUS", "DISTRIBUTION", "VERSION", "HOOKS")] + [
        (r["name"], r["status"], r["distribution"] or "(in-process)", r["version"] or "-",
         ", ".join(r["hooks"]) if r["hooks"] else ("(none)" if r["hooks"] == [] else "-"))
        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4]
           for row in table]
    notes = [_PLUGIN_NOTES[s] for s in _PLUGIN_NOTES if any(r["status"] == s for r in rows)]
    if notes:
        out += ["", *notes, "(the hooks of a plugin that is not loaded are not shown: its "
                "module is not imported)"]
    return "\n".join(out)


def _num(x: float, min_decimals: int = 0) -> str:
    s = f"{x:.4f}".rstrip("0").rstrip(".")
    if min_decimals and "." not in s:
        s += "." + "0" * min_decimals
    return s


def _bytes(n: float) -> str:
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.2f}{unit}"
        n /= 1024
    return f"{n}B"


if __name__ == "__main__":
    sys.exit(main())
