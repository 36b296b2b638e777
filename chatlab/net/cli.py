"""``chatlab net``: the network lab's housekeeping.

    chatlab net list           the lab's networks on this machine: live ones, and leftovers
    chatlab net clean          remove what crashed or killed networks left (their owner is dead)
    chatlab net clean --all    also remove lab namespaces no live network owns (or just those named after --all)
    chatlab net bench          how fast and how exact the router is on this machine
"""

from __future__ import annotations

import argparse
import sys

from . import netns


def cmd_list(args: argparse.Namespace) -> int:
    records = [netns.Record.load(p) for p in sorted(netns.RECORDS.glob("*.json"))] if netns.RECORDS.exists() else []
    for record in filter(None, records):
        data = record.data
        state = "running" if netns.alive(data.get("owner", 0), data.get("started")) else "owner gone: a leftover"
        print(f"network {record.token}: owner PID {data.get('owner')} ({state}), router PID {data.get('router')}")
        for name in data.get("namespaces", []):
            print(f"  {name}")
    stray = [name for name in netns.unrecorded() if not any(name in (r.data.get("namespaces") or []) for r in
                                                               filter(None, records))]
    for name in stray:
        print(f"unowned namespace {name} (chatlab net clean --all removes it)")
    if not any(records) and not stray:
        print("no lab networks on this machine")
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    why = netns.problem()
    if why:
        print(f"chatlab net clean: {why}", file=sys.stderr)
        return 1
    removed = netns.clean(everything=args.all, only=args.namespaces or None)
    print(f"removed {len(removed)} namespaces" + (": " + ", ".join(removed) if removed else ""))
    left = netns.unrecorded()
    if left and not args.all:
        print(f"{len(left)} lab namespaces have no record of a live owner; --all removes them: {', '.join(left)}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    why = netns.problem()
    if why:
        print(f"chatlab net bench: {why}", file=sys.stderr)
        return 1
    from .bench import report

    print(report(args.seconds), flush=True)
    return 0


def add_parsers(sub: "argparse._SubParsersAction") -> None:
    net = sub.add_parser("net", help="the network lab: list or clean up its networks, measure its router")
    commands = net.add_subparsers(dest="net_command", required=True, metavar="COMMAND")
    listing = commands.add_parser("list", help="the lab's networks on this machine, and any leftovers")
    listing.set_defaults(func=cmd_list)
    clean = commands.add_parser("clean", help="remove what crashed or killed networks left behind")
    clean.add_argument("--all", action="store_true",
                       help="also remove lab namespaces (chl-...) that no live network owns")
    clean.add_argument("namespaces", nargs="*", metavar="NAMESPACE",
                       help="with --all: only these namespaces (default: every one no live network owns)")
    clean.set_defaults(func=cmd_clean)
    bench = commands.add_parser("bench", help="the router's forwarding rate and delay accuracy on this machine")
    bench.add_argument("--seconds", type=float, default=2.0, help="seconds of each rate measurement (default 2)")
    bench.set_defaults(func=cmd_bench)
