"""A chatlab server for the benchmark: ``python -m chatlab.bench.serve MODEL``.

It builds exactly the server ``chatlab serve --model MODEL`` builds
(``make_server``), with two differences that the benchmark needs:

* **limits off** (``Limits.off()``): every switchable limit (outbound
  queue, rate limits, timeouts, connection caps) is 0, as issue 7 asks: the
  benchmark measures speed, not defences.  The large-room threshold stays
  (it is not a defence: docs/protocol.md, 6.1).  ``--limit NAME=VALUE``
  sets any one, e.g. ``--limit large_room=0`` to announce every join;
* **a quiet log**: WARNING and above only.  ``chatlab serve`` logs every
  chat message (serverlog.py), and the benchmark measures the server, not
  its log.  ``--log FILE`` logs as ``chatlab serve`` does, to FILE instead
  of stderr (with ``--no-message-log``, without the messages): what the log
  costs is then measured too.

It prints ``chatlab server (MODEL) listening on HOST:PORT`` and stops
gracefully on SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from .. import serverlog
from ..limits import Limits
from ..servers import MODELS, make_server

def main(argv: list[str] | None = None) -> int:
    """``python -m chatlab.bench.serve MODEL [--limit NAME=VALUE ...]``"""
    parser = argparse.ArgumentParser(description="a chatlab server for the benchmark (limits off, quiet log)")
    parser.add_argument("model", choices=sorted(MODELS))
    parser.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE",
                        help="set one limit (default: every switchable limit off)")
    parser.add_argument("--log", metavar="FILE", help="log as chatlab serve does, to FILE (default: warnings only)")
    parser.add_argument("--no-message-log", action="store_true", help="with --log: leave the chat messages out")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.limit:
        name, _, value = item.partition("=")
        overrides[name] = float(value) if "." in value else int(value)
    if args.log:
        sys.stderr = open(args.log, "a", encoding="utf-8")  # the log, for the process's whole life
        serverlog.setup(None, messages=not args.no_message_log)
    else:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)-7s %(message)s")
    server = make_server(args.model, "127.0.0.1", 0, Limits.off(**overrides))
    server.start()
    host, port = server.address
    print(f"chatlab server ({args.model}) listening on {host}:{port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
