"""The ``chatlab`` command: ``chatlab serve``, ``chatlab chat``, ...

Each subcommand is a thin layer over the package, so that what a student
types in a terminal and what a notebook calls are the same code.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
import signal
import sys

from . import __version__
from .limits import Limits
from .servers import DEFAULT_HOST, DEFAULT_PORT, MODELS, ServerError, format_address, make_server


def parse_address(text: str | None, default_host: str = DEFAULT_HOST) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``:PORT`` or ``[IPv6]:PORT`` as (host, port)."""
    if not text:
        return default_host, DEFAULT_PORT
    if text.startswith("["):  # [::1]:5050
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:  # a bare host, IPv6 included
        host, port = text, ""
    try:
        return host or default_host, int(port) if port else DEFAULT_PORT
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST[:PORT]") from None


def setup_logging(log_file: str | None, verbose: bool) -> None:
    fmt = logging.Formatter("%(asctime)s %(levelname)-7s %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    root = logging.getLogger("chatlab")
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in handlers:
        handler.setFormatter(fmt)
        root.addHandler(handler)


def cmd_serve(args: argparse.Namespace) -> int:
    setup_logging(args.log, args.verbose)
    limits = Limits(outbox_bytes=args.outbox_bytes)
    server = make_server(args.model, args.host, args.port, limits, db=args.db)
    try:
        server.start()
    except ServerError as exc:
        print(f"chatlab serve: {exc}", file=sys.stderr)
        return 1
    where = format_address(server.address)
    print(f"chatlab server ({args.model}) listening on {where}", flush=True)
    if args.host in ("0.0.0.0", "::"):
        print("Listening on every interface: others on your network can join with "
              "'chatlab chat YOUR-IP:%d'. Your firewall may ask to allow it." % server.address[1], flush=True)
    print("Press Ctrl+C to stop.", flush=True)
    # A polite "terminate" (from a notebook or a process manager) stops the
    # server the same graceful way Ctrl+C does.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nStopping: telling every client, closing every connection...", file=sys.stderr, flush=True)
    finally:
        server.stop()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_chat(args: argparse.Namespace) -> int:
    from .terminal import run

    host, port = args.address
    return run(host, port, args.name, downloads=args.downloads)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatlab", description="A teaching lab kit for TCP socket programming: a multi-client chat."
    )
    parser.add_argument("--version", action="version", version=f"chatlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run a chat server")
    serve.add_argument("--host", default=DEFAULT_HOST,
                       help="address to listen on (default %(default)s: this machine only; "
                            "0.0.0.0 or :: for a classroom LAN)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT,
                       help="TCP port (default %(default)s; 0 picks a free one)")
    serve.add_argument("--model", choices=sorted(MODELS), default="threads",
                       help="concurrency model (default %(default)s)")
    serve.add_argument("--log", metavar="FILE", help="also write the log to FILE")
    serve.add_argument("--db", metavar="FILE",
                       help="keep message history in this SQLite file, across restarts (default: in memory)")
    serve.add_argument("--outbox-bytes", type=int, default=Limits.outbox_bytes,
                       help="bytes queued for one client before it is dropped as too slow "
                            "(default %(default)s; 0: no limit)")
    serve.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    serve.set_defaults(func=cmd_serve)

    chat = sub.add_parser("chat", help="chat in this terminal")
    chat.add_argument("address", nargs="?", type=parse_address, default=(DEFAULT_HOST, DEFAULT_PORT),
                      metavar="HOST[:PORT]", help=f"server to join (default {DEFAULT_HOST}:{DEFAULT_PORT})")
    chat.add_argument("--name", help="your name (asked for if not given)")
    chat.add_argument("--downloads", type=Path, default=None, metavar="DIR",
                      help="where files you /accept are saved (default: the current folder)")
    chat.set_defaults(func=cmd_chat)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
