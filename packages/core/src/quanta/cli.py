"""The ``quanta`` command line."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quanta", description="Quanta command line")
    sub = parser.add_subparsers(dest="command", required=True)
    mb = sub.add_parser("microbenchmark", help="time Ray's core microbenchmark workloads")
    mb.add_argument("--rounds", type=int, default=3, help="timed rounds per workload")
    mb.add_argument("--seconds", type=float, default=2.0, help="seconds per round")
    mb.add_argument("--only", action="append", default=None,
                    help="run workloads whose name contains this (repeatable)")
    args = parser.parse_args(argv)
    if args.command == "microbenchmark":
        if args.rounds < 1:
            parser.error("--rounds must be >= 1")
        if args.seconds <= 0:
            parser.error("--seconds must be > 0")
        from quanta._private import microbenchmark

        microbenchmark.run(rounds=args.rounds, seconds=args.seconds, only=args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
