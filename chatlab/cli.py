"""The ``chatlab`` command: ``chatlab serve``, ``chatlab chat``, ...

Each subcommand is a thin layer over the package, so that what a student
types in a terminal and what a notebook calls are the same code.
"""

from __future__ import annotations

import argparse
import getpass
from pathlib import Path
import signal
import ssl
import sys
from typing import Any

from . import __version__, serverlog
from .accounts import Accounts, AccountsError, add_account, read_accounts, remove_account
from .limits import Limits
from .servers import DEFAULT_HOST, DEFAULT_PORT, MODELS, Listener, ServerError, format_address, make_server


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
        number = int(port) if port else DEFAULT_PORT
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST[:PORT]") from None
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"port {number} in {text!r} is not a TCP port: ports go from 1 to 65535")
    return host or default_host, number


def listen_port(text: str) -> int:
    """A port to listen on: 1 to 65535, or 0 for any free port the kernel picks."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{number} is not a TCP port: ports go from 1 to 65535 "
                                         "(0 lets the kernel pick a free one)")
    return number


def cmd_serve(args: argparse.Namespace) -> int:
    serverlog.setup(args.log, args.verbose, messages=not args.no_message_log)
    try:
        limits = Limits(outbox_bytes=args.outbox_bytes, **{field: getattr(args, field) for field, _, _ in LIMIT_OPTIONS})
        accounts = Accounts.load(args.users, required=not args.guests) if args.users else None
    except (ValueError, AccountsError) as exc:
        print(f"chatlab serve: {exc}", file=sys.stderr)
        return 2
    if args.guests and not args.users:
        print("chatlab serve: --guests only makes sense with --users FILE", file=sys.stderr)
        return 2
    options: dict[str, object] = {"db": args.db, "accounts": accounts}
    tls: ssl.SSLContext | None = None
    if args.redis:
        if args.db:
            print("chatlab serve: --db and --redis: with Redis, the history lives in Redis (docs/scaling.md)",
                  file=sys.stderr)
            return 2
        try:
            from .backplane import make_backplane

            options["backplane"] = make_backplane(args.redis, args.redis_mode)
        except ImportError:
            print("chatlab serve: --redis needs the redis package: pip install 'chatlab[redis]'", file=sys.stderr)
            return 1
        except ValueError as exc:
            print(f"chatlab serve: --redis {args.redis}: {exc}", file=sys.stderr)
            return 2
    if args.tls:
        from .tls import server_context

        try:
            options["tls"] = tls = server_context(args.cert, args.key)
        except (OSError, ValueError) as exc:
            print(f"chatlab serve: cannot load the TLS certificate {args.cert} and key {args.key}: {exc}. "
                  "Make a lab set with 'chatlab certs'.", file=sys.stderr)
            return 1
    # A polite "terminate" (from a notebook or a process manager) stops the
    # server the same graceful way Ctrl+C does.
    signal.signal(signal.SIGTERM, _interrupt)
    # And Ctrl+C must work even when the parent started us with SIGINT
    # ignored (as a shell does for a job it puts in the background).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from .instructor import StatusBoard

    board = StatusBoard() if args.web_port is not None else None  # the instructor view
    try:
        web = web_listeners(args, tls, board)
    except ImportError as exc:
        print(f"chatlab serve: --web-port needs the 'web' extra ({exc.name} is missing): "
              "pip install 'chatlab[web]'", file=sys.stderr)
        return 1
    try:
        options["listeners"] = irc_listeners(args, tls) + web  # (a server name IRC cannot carry: ValueError)
        server = make_server(args.model, args.host, args.port, limits, **options)
        if board is not None:
            board.core = server.core
        server.start()
    except (ServerError, ValueError) as exc:
        print(f"chatlab serve: {exc}", file=sys.stderr)
        return 1
    # From the moment the server runs, Ctrl+C must lead to stop(): a client
    # may connect, and the user press Ctrl+C, before the messages below are
    # printed.  (Outside this try, Ctrl+C ended the process without telling
    # anyone: the cause of a flaky test.)
    try:
        where = format_address(server.address)
        print(f"chatlab server ({args.model}{', TLS' if args.tls else ''}) listening on {where}", flush=True)
        if "irc" in server.addresses:
            irc = server.addresses["irc"]
            how = (f"in irssi, /connect -tls -tls_cafile ca.pem localhost {irc[1]}" if args.tls
                   else f"irssi -c {irc[0]} -p {irc[1]} -n NAME")
            print(f"IRC{' over TLS' if args.tls else ''} on {format_address(irc)}: {how}", flush=True)
        if args.redis:
            status = server.backplane.status()
            print(f"Sharing the chat with every server on Redis {args.redis} (this is node {status['node']}, "
                  f"delivering with {status['mode']}).", flush=True)
        if args.host in ("0.0.0.0", "::"):
            print("Listening on every interface: others on your network can join with "
                  "'chatlab chat YOUR-IP:%d'. Your firewall may ask to allow it." % server.address[1], flush=True)
        if args.web_port is not None:
            print_web_urls(args.host, server.addresses["web"][1], args.tls, board)
        if accounts is not None:
            who = "names with an account need its password" if args.guests else "every name needs an account"
            print(f"{len(accounts.entries)} accounts from {args.users}: {who}.", flush=True)
        print("Press Ctrl+C to stop.", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nStopping: telling every client, closing every connection...", file=sys.stderr, flush=True)
    finally:
        server.stop()
    return 0


def irc_listeners(args: argparse.Namespace, tls: ssl.SSLContext | None) -> tuple[Listener, ...]:
    """``--irc-port``: a port speaking IRC (chatlab/dialects/irc.py), TLS too if the main port has it."""
    if args.irc_port is None:
        return ()
    from .dialects.irc import SERVER, IrcDialect

    dialect = IrcDialect if args.irc_name == SERVER else IrcDialect.named(args.irc_name)
    return (Listener("irc", args.host, args.irc_port, dialect, tls),)


def web_listeners(args: argparse.Namespace, tls: ssl.SSLContext | None, board: Any = None) -> tuple[Listener, ...]:
    """``--web-port``: the chat page over HTTP, then the chat over WebSocket (chatlab/dialects/web.py).

    With ``--tls`` it is https and wss, with the same certificate as the main port.
    """
    if args.web_port is None:
        return ()
    return (web_listener(args.host, args.web_port, tls, board),)


def web_listener(host: str, port: int, tls: ssl.SSLContext | None = None, board: Any = None) -> Listener:
    """A Listener for a web port: its dialect knows whether the page's origin is https, and the
    instructor view's board (chatlab/instructor.py), if there is one."""
    from functools import partial

    from .dialects.web import WebPort

    view = {"status": board.status, "status_key": board.key} if board is not None else {}
    return Listener("web", host, port, partial(WebPort, secure=tls is not None, **view), tls=tls)


def print_web_urls(host: str, port: int, secure: bool, board: Any = None) -> None:
    """Say where the page is; for a classroom (every interface), on each LAN address, and as a QR code."""
    from .weblink import EVERYWHERE, page_urls, print_qr

    urls = page_urls(host, port, secure)
    print(f"Chat in a browser: {urls[0]}", flush=True)
    for more in urls[1:]:
        print(f"               or: {more}", flush=True)
    if board is not None:
        print("Instructor view (who is connected, messages a second; keep this address to yourself): "
              f"{urls[0]}instructor?key={board.key}", flush=True)
    if host in EVERYWHERE:
        print("Scan with a phone on the same network:", flush=True)
        print_qr(urls[0], sys.stdout)
        sys.stdout.flush()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_chat(args: argparse.Namespace) -> int:
    from .terminal import run

    host, port = args.address
    return run(host, port, args.name, downloads=args.downloads, tls=args.tls or bool(args.cafile),
               cafile=args.cafile, also=tuple(args.also or ()))


def cmd_certs(args: argparse.Namespace) -> int:
    try:
        from .tls import make_lab_pki
    except ImportError:  # pragma: no cover - cryptography is in the lab and test extras
        print("chatlab certs needs the 'cryptography' package: pip install cryptography", file=sys.stderr)
        return 1
    paths = make_lab_pki(args.out, args.host or None, args.days)
    print(f"A lab certificate authority and a server certificate for {', '.join(args.host or ['localhost', '127.0.0.1', '::1'])}:")
    for what, path in paths.items():
        print(f"  {what:7} {path}")
    print(f"Serve:  chatlab serve --tls --cert {paths['cert']} --key {paths['key']}")
    print(f"Chat:   chatlab chat --tls --cafile {paths['ca']} HOST:PORT   (give students ca.pem, never ca-key.pem)")
    return 0


# The limits ``chatlab serve`` takes as options, each named after its Limits
# field (docs/protocol.md, section 9, and docs/security.md say why each is so).
LIMIT_OPTIONS: tuple[tuple[str, type, str], ...] = (
    ("max_line", int, "longest line in lines mode, in bytes"),
    ("max_frame", int, "largest frame payload, in bytes"),
    ("max_name", int, "longest name, in characters (0: no limit)"),
    ("max_text", int, "longest message, in characters (0: no limit)"),
    ("register_timeout", float, "seconds a new connection has to say hello (0: no limit)"),
    ("idle_timeout", float, "seconds of silence before a connection is closed as idle (0: never)"),
    ("ping_interval", float, "seconds of silence before a frames client is sent a keep-alive ping (0: never)"),
    ("max_clients", int, "open connections in all (0: no limit)"),
    ("max_per_address", int, "open connections from one address (0: no limit)"),
    ("accept_rate", float, "new connections a second from one address, after a burst (0: no limit)"),
    ("accept_burst", int, "the burst of new connections from one address"),
    ("rate_limit", float, "messages a second from one client, after a burst (0: no limit)"),
    ("rate_burst", int, "the burst of messages from one client"),
    ("relay_rate", float, "bytes of text a second one address may have relayed, after a burst (0: no limit)"),
    ("relay_burst", int, "the burst of bytes of text from one address"),
    ("flood_limit", int, "messages refused for rate, in one flood, before disconnecting (0: never)"),
    ("auth_delay", float, "seconds before a wrong password is answered (0: at once)"),
    ("auth_tries", int, "wrong passwords before the connection is closed (0: no limit)"),
    ("upload_timeout", float, "seconds an upload may wait for its next chunk before it is dropped (0: never)"),
    ("uploads_per_user", int, "uploads one client may have unfinished at once (0: no limit)"),
    ("large_room", int, "members above which a room announces newcomers only when they first speak "
                        "(0: announce every join)"),
)


def read_password(name: str) -> str:
    """A new password: typed twice without echo at a terminal, else one line of stdin (for scripts)."""
    if sys.stdin.isatty():
        first = getpass.getpass(f"Password for {name}: ")
        if getpass.getpass("The same again: ") != first:
            raise AccountsError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def cmd_users(args: argparse.Namespace) -> int:
    if args.action != "list" and not args.name:
        print(f"chatlab users {args.action}: give the account's NAME", file=sys.stderr)
        return 2
    try:
        if args.action == "add":
            changed = add_account(args.file, args.name, read_password(args.name))
            print(f"{'changed the password of' if changed else 'added'} {args.name} in {args.file}")
        elif args.action == "remove":
            if not remove_account(args.file, args.name):
                print(f"chatlab users: no account {args.name} in {args.file}", file=sys.stderr)
                return 1
            print(f"removed {args.name} from {args.file}")
        else:
            for name, _ in read_accounts(args.file).values():
                print(name)
    except (AccountsError, OSError) as exc:
        print(f"chatlab users: {exc}", file=sys.stderr)
        return 1
    return 0


def add_redis_options(serve: argparse.ArgumentParser) -> None:
    """``chatlab serve --redis URL``: several servers, one chat (docs/scaling.md)."""
    serve.add_argument("--redis", metavar="URL",
                       help="share users, rooms, ids and history with every server on this Redis "
                            "(e.g. redis://127.0.0.1:6379/0); see docs/scaling.md")
    serve.add_argument("--redis-mode", choices=["streams", "pubsub"], default="streams",
                       help="how servers hear each other: streams (default: a server that was away catches up) "
                            "or pubsub (what it missed is lost: for the lesson of notebook 14)")


def cmd_scale_out(args: argparse.Namespace) -> int:
    """``chatlab bench --scale-out``: one node against two and three on Redis (chatlab/bench/scaleout.py)."""
    from .bench.scaleout import run_scale_out, text_report

    receivers = [int(r) for r in (args.receivers or "").split(",") if r.strip()] or [100]
    result = run_scale_out(receivers[0], args.messages or 2000, args.scale_out_model,
                           progress=lambda r: print(f"  {r['setup']}: {r.get('rate', 0):,.0f} deliveries/s",
                                                    file=sys.stderr, flush=True))
    print(text_report(result))
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        print(f"(written to {args.json})")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.scale_out:
        return cmd_scale_out(args)
    from .bench import run_benchmark, text_report
    from .bench.progress import ProgressBar

    # A bar on stderr (each finished run listed above it), so that stdout keeps only the report.
    progress = ProgressBar("chatlab bench", log=True)

    split = lambda text: [item.strip() for item in text.split(",") if item.strip()] if text else None
    try:
        result = run_benchmark(args.size, split(args.targets), split(args.scenarios),
                               [int(r) for r in split(args.receivers) or []] or None, args.messages, progress,
                               args.repeats)
    except ValueError as exc:
        print(f"chatlab bench: {exc}", file=sys.stderr)
        return 2
    print(text_report(result))
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        print(f"(written to {args.json})")
    return 0


def cmd_capture(args: argparse.Namespace) -> int:
    from .net import capture

    if args.read:
        return capture.show_file(args.read)
    return capture.run(args.interface, None if args.all else args.port, args.host, args.write, args.count,
                       args.duration, args.netns, args.quiet)


def add_capture_parser(sub: argparse._SubParsersAction) -> None:
    capture = sub.add_parser("capture", help="capture a chat's packets (a raw socket: needs root), or read a capture",
                             description="Capture packets on an interface into a pcap file (Wireshark reads it), "
                                         "printing each one; or, with --read, show a capture's packets and TCP "
                                         "conversations.")
    capture.add_argument("-i", "--interface", default="lo", help="interface (default %(default)s; 'any': all of them)")
    capture.add_argument("--port", type=int, default=DEFAULT_PORT,
                         help="keep packets from or to this TCP or UDP port (default %(default)s)")
    capture.add_argument("--all", action="store_true", help="keep every packet, whatever its port")
    capture.add_argument("--host", help="keep packets from or to this IP address")
    capture.add_argument("-c", "--count", type=int, help="stop after this many packets")
    capture.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    capture.add_argument("-w", "--write", default="chatlab-capture.pcap", metavar="FILE",
                         help="the pcap file to write (default %(default)s)")
    capture.add_argument("--netns", metavar="NAME", help="capture in this network namespace (a lab host)")
    capture.add_argument("-q", "--quiet", action="store_true", help="do not print each packet")
    capture.add_argument("-r", "--read", metavar="FILE", help="show the packets and conversations of a pcap file")
    capture.set_defaults(func=cmd_capture)


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import main as doctor

    return doctor(args.address, args.port, args.tls, args.cafile, args.timeout)


def add_doctor_parser(sub: argparse._SubParsersAction) -> None:
    from .doctor import CONNECT_TIMEOUT

    doctor = sub.add_parser(
        "doctor", help="why a connection fails: try it step by step and say what to do",
        description="Connect to a chat server the way a client does -- name, TCP handshake, banner, ping -- and "
                    "say in plain words what went wrong and what to do next; or, with --port N, check a port "
                    "before serving on it (which process holds it). Exit status: 0 a chatlab server answered, "
                    "1 a problem was found, 3 (--port) the port is free.")
    doctor.add_argument("address", nargs="?", type=parse_address, default=None, metavar="HOST[:PORT]",
                        help=f"the server to check (default {DEFAULT_HOST}:{DEFAULT_PORT})")
    doctor.add_argument("--tls", action="store_true", help="connect with TLS, as 'chatlab chat --tls' does")
    doctor.add_argument("--cafile", help="trust this certificate authority (the lab's ca.pem); implies --tls")
    doctor.add_argument("--port", type=int, help="check this port before serving on it: free, or held by whom")
    doctor.add_argument("--timeout", type=float, default=CONNECT_TIMEOUT, metavar="SECONDS",
                        help="how long to wait for the TCP handshake (default %(default)s)")
    doctor.set_defaults(func=cmd_doctor)


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
    serve.add_argument("--port", type=listen_port, default=DEFAULT_PORT,
                       help="TCP port (default %(default)s; 0 picks a free one)")
    serve.add_argument("--model", choices=sorted(MODELS), default="threads",
                       help="concurrency model (default %(default)s)")
    serve.add_argument("--log", metavar="FILE", help="also write the log to FILE")
    serve.add_argument("--no-message-log", action="store_true",
                       help="do not log each chat message (connections, registrations, disconnections and "
                            "errors are still logged): the one log line that grows with the traffic")
    serve.add_argument("--db", metavar="FILE",
                       help="keep message history in this SQLite file, across restarts (default: in memory)")
    serve.add_argument("--outbox-bytes", type=int, default=Limits.outbox_bytes,
                       help="bytes queued for one client before it is dropped as too slow "
                            "(default %(default)s; 0: no limit)")
    serve.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    serve.add_argument("--tls", action="store_true", help="encrypt with TLS (see 'chatlab certs')")
    serve.add_argument("--cert", default="chatlab-certs/server.pem", help="TLS certificate (default %(default)s)")
    serve.add_argument("--key", default="chatlab-certs/server-key.pem", help="TLS private key (default %(default)s)")
    for field, kind, text in LIMIT_OPTIONS:
        serve.add_argument("--" + field.replace("_", "-"), type=kind, default=getattr(Limits, field),
                           metavar="N", help=f"{text}; default %(default)s")
    serve.add_argument("--users", metavar="FILE",
                       help="accounts file (see 'chatlab users'): every name then needs its password")
    serve.add_argument("--guests", action="store_true",
                       help="with --users: names without an account may join without a password")
    serve.add_argument("--irc-port", type=listen_port, metavar="PORT",
                       help="also speak IRC on this port, for irssi, weechat, HexChat... (0 picks a free one; "
                            "with --tls, IRC over TLS)")
    serve.add_argument("--irc-name", default="chatlab.server", metavar="NAME",
                       help="what the IRC port calls its server in replies (default %(default)s)")
    serve.add_argument("--web-port", type=listen_port, metavar="PORT",
                       help="also serve the chat page and WebSocket on this port, for browsers and phones "
                            "(0 picks a free one; needs the 'web' extra)")
    add_redis_options(serve)
    serve.set_defaults(func=cmd_serve)

    users = sub.add_parser("users", help="manage the accounts of a server run with --users")
    users.add_argument("action", choices=["add", "remove", "list"],
                       help="add NAME (or change its password), remove NAME, or list the names")
    users.add_argument("name", nargs="?", help="the account's name")
    users.add_argument("--file", default="users.txt", help="the accounts file (default %(default)s)")
    users.set_defaults(func=cmd_users)

    chat = sub.add_parser("chat", help="chat in this terminal")
    chat.add_argument("address", nargs="?", type=parse_address, default=(DEFAULT_HOST, DEFAULT_PORT),
                      metavar="HOST[:PORT]", help=f"server to join (default {DEFAULT_HOST}:{DEFAULT_PORT})")
    chat.add_argument("--name", help="your name (asked for if not given)")
    chat.add_argument("--downloads", type=Path, default=None, metavar="DIR",
                      help="where files you /accept are saved (default: the current folder)")
    chat.add_argument("--tls", action="store_true", help="connect with TLS, verifying the server")
    chat.add_argument("--cafile", help="trust this certificate authority (the lab's ca.pem); implies --tls")
    chat.add_argument("--also", action="append", type=parse_address, metavar="HOST[:PORT]",
                      help="another server of the same chat, to reconnect to if this one goes away (repeat)")
    chat.set_defaults(func=cmd_chat)

    certs = sub.add_parser("certs", help="make a lab certificate authority and a server certificate for TLS")
    certs.add_argument("--out", default="chatlab-certs", help="folder for the files (default %(default)s)")
    certs.add_argument("--host", action="append",
                       help="a name or IP address students will connect to (repeat; default localhost, 127.0.0.1, ::1)")
    certs.add_argument("--days", type=int, default=365, help="how long the certificates are valid (default %(default)s)")
    certs.set_defaults(func=cmd_certs)

    # The course: `chatlab check [N]` for students, `chatlab course generate` for instructors.
    from .course.cli import add_parsers as add_course_parsers

    add_course_parsers(sub)
    # The network lab's housekeeping: `chatlab net list/clean/bench`.
    from .net.cli import add_parsers as add_net_parsers

    add_net_parsers(sub)
    add_capture_parser(sub)
    add_doctor_parser(sub)
    bench = sub.add_parser("bench", help="measure the server models against a naive server and Redis")
    bench.add_argument("--size", choices=["tiny", "small", "full"], default="small",
                       help="tiny: seconds (proves it works); small: a minute or two; full: docs/performance.md "
                            "(default %(default)s)")
    bench.add_argument("--targets", metavar="A,B", help="servers to measure (default: relay, every model, naive, redis)")
    bench.add_argument("--scenarios", metavar="A,B",
                       help="fanout, latency, load (latency under load), many, stalled, scale, joins (default: all)")
    bench.add_argument("--receivers", metavar="R,R", help="receiver counts R, instead of the size's")
    bench.add_argument("--messages", type=int, metavar="M", help="messages per run, instead of the size's")
    bench.add_argument("--repeats", type=int, metavar="N",
                       help="runs of each throughput and latency measurement, reported as their median "
                            "(default: 3 at full size, else 1)")
    bench.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    bench.add_argument("--scale-out", action="store_true",
                       help="instead: one node against two and three sharing one chat on Redis (docs/scaling.md)")
    bench.add_argument("--scale-out-model", choices=sorted(MODELS), default="selectors",
                       help="with --scale-out: the nodes' model (default %(default)s)")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
