"""Lab instruments: what the notebooks use to start real servers, drive them and record what happens.

A notebook is a strange place to run a server.  A cell can be interrupted,
re-run, or the kernel restarted, and a server that survives any of those
keeps its port: the next ``start`` fails with "address already in use".
So everything here that opens a socket or a thread is an *instrument*:

* a context manager, so ``with`` always releases it, even when the body
  raises or the cell is interrupted (KeyboardInterrupt is an exception too);
* registered in one place, so that ``stop_all()`` stops whatever the
  notebook started, and so does the interpreter's exit (``atexit``) when
  the kernel shuts down or restarts;
* for a live server, watched by a ``weakref.finalize``: re-running
  ``server = start_server(...)`` drops the old handle, and dropping the last
  reference to it stops the old server instead of leaking its port.

The package, one module per subject, each readable on its own -- in the
order they build on each other:

* ``registry`` -- the one monotonic ``clock``, the ``Instrument`` base class
  and the register of everything running (``running``, ``stop_all``,
  ``leftover_threads``), and the named limits the instruments share;
* ``recorder`` -- ``Recorder``: timestamped events on that clock, turned into
  tables here and plots in ``chatlab.plots``;
* ``measure`` -- percentiles, ``tcp_info`` (what the kernel knows about a
  connection, Linux only), process memory, and ``where()`` for plot titles;
* ``live`` -- live servers: ``start_server`` / ``live_server`` for any
  server (a model name, a class, a factory), ``ServerProcess`` for one in a
  child process whose memory we can measure;
* ``network`` -- the network in between: ``Relay``, a man in the middle that
  cuts the byte stream into different pieces and can keep a copy of every
  byte; ``EchoServer``, the smallest server of all; ``send_all`` and
  ``recv_exactly``;
* ``folders -- where the course's ``exercises/`` and ``solutions/`` are;
* ``choosing`` -- ``pick``, to choose between the student's exercise and the
  reference;
* ``bots`` -- ``Bot``, a client that plays a person (frames or lines mode);
* ``plans`` -- ``run_plan``: bots that join, chat and leave on a schedule;
* ``crowd`` -- ``Crowd``: hundreds of listening clients on one thread;
* ``redis`` -- ``RedisServer``, a private redis-server on a free port, and
  ``NodeProcess``, one node of a chat shared on it (``chatlab serve
  --redis``) in a child process, to kill or pause (notebook 14).

Every name is also here, in ``chatlab.lab``: notebooks write ``lab.Bot``,
not ``lab.bots.Bot``.  ``python -m chatlab.lab serve SPEC`` (``__main__``)
is the child side of ``ServerProcess``.

Everything listens on 127.0.0.1 and port 0 unless told otherwise.  This
package never imports matplotlib: the plots live in ``chatlab.plots``.
"""

from __future__ import annotations

# What the instruments are built on, importable from here as before.
from ..framing import FrameDecoder, LineDecoder, encode_frame, encode_line
from ..limits import Limits
from ..servers import MODELS, DEFAULT_HOST, format_address, make_server
from ..testing import chatlab_threads

from .registry import CAPTURE_LIMIT, LOG_LINES, RECV_SIZE, TIMEOUT, Instrument, clock, leftover_threads, running, stop_all
from .recorder import (
    CLOSED, CONNECT_STARTED, CONNECTED, KINDS, RECEIVED, REGISTERED, SENT,
    Event, Recorder, describe, format_table,
)
from .measure import (
    HAS_TCP_INFO, load_average, percentile, process_memory, process_threads, raise_fd_limit, setup_report, summary,
    tcp_info, where,
)
from .live import LiveServer, ServerProcess, live_server, no_defences, start_server
from .network import Chunk, EchoServer, Relay, echo_once, recv_exactly, send_all
from .folders import COURSE_FOLDERS, course_folder
from .choosing import pick
from .bots import Bot
from .plans import Plan, chat_plan, run_plan
from .crowd import Crowd
from .redis import NodeProcess, RedisServer, redis_available
from ..dialects.lines import parse_rendered as parse_server_line  # a lines-mode line, read as the frame it stands for

__all__ = [
    "FrameDecoder", "LineDecoder", "encode_frame", "encode_line", "Limits", "MODELS", "DEFAULT_HOST",
    "format_address", "make_server", "chatlab_threads",
    "CAPTURE_LIMIT", "LOG_LINES", "RECV_SIZE", "TIMEOUT", "Instrument", "clock", "leftover_threads", "running",
    "stop_all",
    "CLOSED", "CONNECT_STARTED", "CONNECTED", "KINDS", "RECEIVED", "REGISTERED", "SENT", "Event", "Recorder",
    "describe", "format_table",
    "HAS_TCP_INFO", "load_average", "percentile", "process_memory", "process_threads", "raise_fd_limit",
    "setup_report", "summary", "tcp_info", "where",
    "LiveServer", "ServerProcess", "live_server", "no_defences", "start_server",
    "Chunk", "EchoServer", "Relay", "echo_once", "recv_exactly", "send_all",
    "COURSE_FOLDERS", "course_folder", "pick", "Bot", "Plan", "chat_plan", "run_plan", "Crowd",
    "NodeProcess", "RedisServer", "redis_available",
    "parse_server_line",
]
