"""The catalogue of classic student mistakes, each one a change to a reference solution.

A check that passes a classic mistake teaches the mistake.  So every
mistake students are known to make is written down here as a *mechanical*
change to ``solutions/exNN_*.py`` -- exact text replaced by other exact
text -- together with the words the hint shown for it must contain.  The
test suite (``tests/test_mistakes.py``) applies each one to a copy of
``solutions/``, runs the checks of its exercise, and asserts that at least
one check fails, that none reports the student's bug as the checker's, and
that the first failure's hint says those words.  Instructors can run the
same with ``chatlab course mistakes [N]``.

The format, for whoever adds an exercise (or a mistake)::

    Mistake(
        exercise=2,
        name="recv(n) every turn",            # short, unique within its exercise
        what="recv_exactly asks recv() for all n bytes on every turn, not for those still missing",
        edits=(("sock.recv(n - len(received))", "sock.recv(n)"),),  # (old, new) in solutions/FILE
        hint=("missing",),                    # words the first failure's hint must contain (any case)
    )

Each ``old`` must occur exactly once in the solution file, at the time the
edit is made (edits apply in order): when a solution changes so that an
``old`` no longer matches, the catalogue fails loudly, and the mistake is
rewritten for the new solution -- never silently skipped.  ``file`` is the
exercise's own file unless given (a mistake may also live in an earlier
exercise's file that this one builds on).  Keep each mistake one thing a
student would really write, and its hint words the ones that name *that*
mistake: a hint that would fit any failure proves nothing.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from . import EXERCISES, exercise


@dataclass(frozen=True)
class Mistake:
    exercise: int
    name: str
    what: str  # the mistake, in words, as an instructor would describe it
    edits: tuple[tuple[str, str], ...]  # (old, new): exact text of the solution file, and what replaces it
    hint: tuple[str, ...]  # words the hint shown for it must contain (any case)
    file: str = ""  # the solution file changed; the exercise's own when empty
    tags: tuple[str, ...] = field(default=())  # framing, partial I/O, closing, locking, races, buffers, limits

    @property
    def filename(self) -> str:
        return self.file or exercise(self.exercise).filename

    @property
    def id(self) -> str:
        return f"{self.exercise}:{self.name}"


class MistakeDoesNotApply(ValueError):
    """An edit's text is not found exactly once: the solution changed, so the catalogue must too."""


def apply(mistake: Mistake, folder: Path) -> None:
    """Make ``mistake`` in ``folder`` (a copy of solutions/), edit by edit."""
    path = folder / mistake.filename
    source = path.read_text(encoding="utf-8")
    for old, new in mistake.edits:
        found = source.count(old)
        if found != 1:
            raise MistakeDoesNotApply(
                f"mistake {mistake.id!r}: {old!r} occurs {found} times in solutions/{mistake.filename}, "
                "not once: the solution changed; rewrite this mistake for it")
        source = source.replace(old, new)
    path.write_text(source, encoding="utf-8")


def copy_with(mistake: Mistake, solutions: Path, into: Path) -> Path:
    """A copy of ``solutions`` in the new folder ``into``, with ``mistake`` made."""
    into.mkdir(parents=True)
    for ex in EXERCISES:
        shutil.copy(solutions / ex.filename, into / ex.filename)
    apply(mistake, into)
    return into


def hint_of(message: str) -> str:
    """The hint of a check's report (what follows "Hint:"), or ""."""
    if "\nHint:" not in message:
        return ""
    return message.rsplit("\nHint:", 1)[1].split("\nYour code printed", 1)[0].strip()


def for_exercise(number: int) -> list[Mistake]:
    return [m for m in MISTAKES if m.exercise == number]


CHECKER_FAULT = "the check itself failed"  # what a student's bug must never be reported as


@dataclass
class Verdict:
    """What the checks of its exercise made of one mistake."""

    mistake: Mistake
    results: list  # runner.Result, in check order

    @property
    def failed(self) -> list:
        return [r for r in self.results if not r.passed]

    @property
    def caught(self) -> bool:
        return bool(self.failed)

    @property
    def first(self):
        return self.failed[0] if self.failed else None

    @property
    def hint(self) -> str:
        return hint_of(self.first.message) if self.first else ""

    @property
    def hint_ok(self) -> bool:
        return bool(self.hint) and all(word.lower() in self.hint.lower() for word in self.mistake.hint)

    @property
    def blamed_checker(self) -> list:
        return [r for r in self.results if CHECKER_FAULT in r.message or "the checker failed" in r.message]

    @property
    def ok(self) -> bool:
        return self.caught and self.hint_ok and not self.blamed_checker


def judge(mistake: Mistake, solutions: Path, workdir: Path, jobs: int = 4) -> Verdict:
    """Make ``mistake`` in a copy of ``solutions`` under ``workdir``, and run its exercise's checks."""
    from .checks import checks_for
    from .runner import run_checks

    folder = copy_with(mistake, solutions, workdir / f"ex{mistake.exercise:02d}_{abs(hash(mistake.name)):x}")
    return Verdict(mistake, run_checks(folder, checks_for(mistake.exercise), jobs=jobs))


M = Mistake
MISTAKES: tuple[Mistake, ...] = ()  # filled in below, exercise by exercise

# --------------------------------------------------------------- exercise 1
EX01 = (
    M(1, "no SO_REUSEADDR", "the listening socket is bound without SO_REUSEADDR, so a restart meets TIME_WAIT",
      (("        if os.name != \"nt\":\n            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n",
        ""),),
      ("SO_REUSEADDR", "TIME_WAIT"), tags=("closing",)),
    M(1, "address repeats port 0", "address returns the host and port it was given (port 0), not the socket's",
      (("        host, port = self.listener.getsockname()[:2]\n        return host, port",
        "        return self.host, self.port"),),
      ("getsockname",)),
    M(1, "echo until forever", "handle() loops on recv() forever, treating b\"\" as an empty message",
      (("        while data := conn.recv(BUFFER_SIZE):\n            conn.sendall(data)",
        "        while True:\n            data = conn.recv(BUFFER_SIZE)\n            conn.sendall(data)"),),
      ('b""', "return"), tags=("closing",)),
    M(1, "no half-close", "echo_once never says it is done sending (no shutdown(SHUT_WR)), and waits for an echo end",
      (("        sock.shutdown(socket.SHUT_WR)\n        received = bytearray()", "        received = bytearray()"),),
      ("SHUT_WR",), tags=("closing",)),
    M(1, "no echo", "handle() reads what the client sends but never sends it back",
      (("            conn.sendall(data)", "            pass"),),
      ("sendall",)),
    M(1, "one recv in echo_once", "echo_once returns what its first recv() gave, not everything until b\"\"",
      (("        while chunk := sock.recv(BUFFER_SIZE):\n            received += chunk\n        return bytes(received)",
        "        return sock.recv(BUFFER_SIZE)"),),
      ("recv()", 'b""', "pieces"), tags=("partial I/O",)),
    M(1, "stop leaves the client", "stop() never shuts down the connection being served, so its thread stays in recv()",
      (("        if current is not None:\n            try:\n                current.shutdown(socket.SHUT_RDWR)\n"
        "            except OSError:\n                pass  # it closed already\n", ""),),
      ("shut down", "current"), tags=("closing",)),
)
MISTAKES += EX01

# --------------------------------------------------------------- exercise 2
EX02 = (
    M(2, "recv(n) every turn", "recv_exactly asks recv() for all n bytes on every turn, not for those still missing",
      (("        piece = sock.recv(n - len(received))", "        piece = sock.recv(n)"),),
      ("missing", "next message"), tags=("partial I/O", "framing")),
    M(2, "send once", "send_all calls send() once and ignores how many bytes it took",
      (("    while left:\n        sent = sock.send(left)\n        left = left[sent:]  # the kernel took `sent` bytes; "
        "the rest is still ours to send",
        "    sock.send(left)"),),
      ("send() returns", "rest"), tags=("partial I/O",)),
    M(2, "send from the start again", "send_all sends what is left, but cut from the original data every time",
      (("        left = left[sent:]", "        left = memoryview(data)[sent:]"),),
      ("position",), tags=("partial I/O",)),
    M(2, "one recv", "recv_exactly returns what one recv(n) gave, however little",
      (("    received = bytearray()\n    while len(received) < n:", "    received = bytearray()\n    if len(received) < n:"),),
      ("fewer", "loop"), tags=("partial I/O",)),
    M(2, "no end of stream", "recv_exactly never checks for b\"\", so a stream that ends early loops forever",
      (("        if not piece:\n            raise ConnectionError(f\"the connection closed after {len(received)} of {n} bytes\")\n",
        ""),),
      ('b""', "ConnectionError"), tags=("closing",)),
)
MISTAKES += EX02

# --------------------------------------------------------------- exercise 3
EX03 = (
    M(3, "CR kept", "the decoder splits at b\"\\n\" but keeps the b\"\\r\" of a CRLF in the line",
      (("            if line.endswith(b\"\\r\"):\n                line = line[:-1]\n", ""),),
      ("\\r",), tags=("framing",)),
    M(3, "partial forgotten", "each feed() starts afresh: the start of a line from the previous feed is lost",
      (("            line = bytes(self.partial) + data[start:end]", "            line = data[start:end]"),),
      ("self.partial", "between"), tags=("framing",)),
    M(3, "partial never emptied", "the start of a line is kept, but never emptied once the line is complete",
      (("            self.partial.clear()\n            if line.endswith", "            if line.endswith"),),
      ("empty", "self.partial"), tags=("framing",)),
    M(3, "one line per feed", "feed() returns at most one line, though one chunk may complete several",
      (("        while (end := data.find(b\"\\n\", start)) != -1:", "        if (end := data.find(b\"\\n\", start)) != -1:"),),
      ("several",), tags=("framing",)),
    M(3, "limit at the newline only", "the limit is checked when a line ends, so a line with no end is kept whole",
      (("        if len(self.partial) + len(rest) > self.max_length + 1:\n"
        "            raise LineTooLong(f\"no end of line within {self.max_length} bytes\")\n", ""),),
      ("before", "newline"), tags=("limits",)),
    M(3, "limit off by one", "a line of exactly max_length bytes is refused (>= instead of >)",
      (("            if len(line) > self.max_length:", "            if len(line) >= self.max_length:"),),
      ("exactly", "max_length"), tags=("limits",)),
    M(3, "CR counted against the limit", "the unfinished line may not hold max_length + 1 bytes, so a CRLF "
      "line of exactly max_length is refused when its \\r and \\n arrive apart",
      (("        if len(self.partial) + len(rest) > self.max_length + 1:",
        "        if len(self.partial) + len(rest) > self.max_length:"),),
      ("\\r", "one more byte"), tags=("limits",)),
)
MISTAKES += EX03

# --------------------------------------------------------------- exercise 4
EX04 = (
    M(4, "little-endian header", "encode_frame writes the length least significant byte first",
      (("    return HEADER.pack(len(payload)) + payload", "    return len(payload).to_bytes(4, \"little\") + payload"),),
      ("big-endian",), tags=("framing",)),
    M(4, "limit off by one in encode_frame", "encode_frame refuses a payload of exactly max_size (>= for >)",
      (("    if len(payload) > max_size:", "    if len(payload) >= max_size:"),),
      ("exactly", "max_size"), tags=("limits",)),
    M(4, "length counts the header", "encode_frame's header counts its own 4 bytes",
      (("    return HEADER.pack(len(payload)) + payload", "    return HEADER.pack(len(payload) + HEADER.size) + payload"),),
      ("payload", "only"), tags=("framing",)),
    M(4, "refused after the payload", "the decoder checks the length only once the whole payload has arrived",
      (("                # Refuse at the header, before waiting for a byte of the payload.\n"
        "                if length > self.max_size:\n"
        "                    raise FrameTooLarge(f\"a frame of {length} bytes announced; the limit is {self.max_size}\")\n",
        ""),
       ("            if len(self.buffer) < self.length:\n                break\n",
        "            if len(self.buffer) < self.length:\n                break\n            if self.length > self.max_size:\n"
        "                raise FrameTooLarge(f\"a frame of {self.length} bytes; the limit is {self.max_size}\")\n")),
      ("header", "before"), tags=("limits",)),
    M(4, "header read too soon", "the decoder unpacks the header before its 4 bytes have all arrived",
      (("                if len(self.buffer) < HEADER.size:\n                    break\n", ""),),
      ("4 header bytes", "pieces"), tags=("framing", "partial I/O")),
    M(4, "one frame per feed", "feed() returns at most one frame, though one chunk may complete several",
      (("            frames.append(bytes(self.buffer[: self.length]))\n            del self.buffer[: self.length]\n"
        "            self.length = None\n",
        "            frames.append(bytes(self.buffer[: self.length]))\n            del self.buffer[: self.length]\n"
        "            self.length = None\n            break\n"),),
      ("several",), tags=("framing",)),
    M(4, "limit off by one in the decoder", "the decoder refuses a frame of exactly max_size (>= for >)",
      (("                if length > self.max_size:", "                if length >= self.max_size:"),),
      ("exactly", "max_size"), tags=("limits",)),
    M(4, "header left in the buffer", "the decoder reads the length but leaves the 4 header bytes in the buffer",
      (("                del self.buffer[: HEADER.size]\n", ""),),
      ("delete", "header"), tags=("framing",)),
)
MISTAKES += EX04

# --------------------------------------------------------------- exercise 5
EX05 = (
    M(5, "broadcast without the lock", "broadcast walks the live self.clients without taking the lock",
      (("        with self.lock:\n            others = [p for p in self.clients if p is not exclude]\n"
        "        for other in others:",
        "        for other in self.clients:\n            if other is exclude:\n                continue"),),
      ("self.lock", "snapshot"), tags=("locking", "races")),
    M(5, "send under the lock", "broadcast sends to every client while holding the lock",
      (("        with self.lock:\n            others = [p for p in self.clients if p is not exclude]\n"
        "        for other in others:\n            try:\n                other.send(data)\n"
        "            except OSError:\n                pass\n",
        "        with self.lock:\n            for other in self.clients:\n                if other is not exclude:\n"
        "                    try:\n                        other.send(data)\n                    except OSError:\n"
        "                        pass\n"),),
      ("outside", "sendall"), tags=("locking",)),
    M(5, "echo to the sender", "broadcast sends each line back to its sender too",
      (("            self.broadcast(line + b\"\\n\", exclude=peer)", "            self.broadcast(line + b\"\\n\")"),),
      ("exclude",)),
    M(5, "newline dropped", "serve() relays each line without the b\"\\n\" the decoder took off",
      (("            self.broadcast(line + b\"\\n\", exclude=peer)", "            self.broadcast(line, exclude=peer)"),),
      ("add it back",), tags=("framing",)),
    M(5, "never removed", "handle() never removes a client that has gone from self.clients",
      (("            with self.lock:\n                self.clients.remove(peer)\n            peer.sock.close()",
        "            peer.sock.close()"),),
      ("remove",), tags=("closing",)),
    M(5, "removed without the lock", "handle() removes the client from self.clients without the lock",
      (("            with self.lock:\n                self.clients.remove(peer)\n            peer.sock.close()",
        "            self.clients.remove(peer)\n            peer.sock.close()"),),
      ("remove", "self.lock"), tags=("locking", "races")),
    M(5, "added without the lock", "serve_forever appends the new client to self.clients without the lock",
      (("            with self.lock:\n                self.clients.append(peer)\n", "            self.clients.append(peer)\n"),),
      ("append", "self.lock"), tags=("locking", "races")),
    M(5, "a reset kills the thread", "handle() catches LineTooLong only, so a client's reset escapes as an error",
      (("        except (OSError, LineTooLong):", "        except LineTooLong:"),),
      ("OSError",), tags=("closing",)),
)
MISTAKES += EX05

# --------------------------------------------------------------- exercise 6
EX06 = (
    M(6, "test and insert apart", "register() tests the name under the lock, then inserts it under a second hold",
      (("            taken = name.casefold() in self.names\n            if not taken:\n",
        "            taken = name.casefold() in self.names\n        with self.lock:\n            if not taken:\n"),),
      ("one hold",), tags=("locking", "races")),
    M(6, "names case-sensitive", "names are kept as typed, so ADA gets in when ada is here",
      (("            taken = name.casefold() in self.names", "            taken = name in self.names"),
       ("                self.names[name.casefold()] = peer", "                self.names[name] = peer"),
       ("            key = peer.name.casefold() if peer.name else None", "            key = peer.name")),
      ("casefold",)),
    M(6, "welcome without the newcomer", "the welcome's list of who is online is taken before the newcomer is added",
      (("                self.names[name.casefold()] = peer\n                peer.name = name\n"
        "                online = [p.name for p in self.names.values()]\n",
        "                online = [p.name for p in self.names.values()]\n"
        "                self.names[name.casefold()] = peer\n                peer.name = name\n"),),
      ("newcomer", "after")),
    M(6, "told of itself", "the list of whom to tell is taken after the insert, so the newcomer hears it joined",
      (("                others = list(self.names.values())\n                self.names[name.casefold()] = peer\n",
        "                self.names[name.casefold()] = peer\n                others = list(self.names.values())\n"),),
      ("before", "newcomer")),
    M(6, "leave said for anyone", "on_close announces every close, whether or not the client had a name here",
      (("            was_here = key is not None and self.names.get(key) is peer\n            if was_here:\n"
        "                del self.names[key]\n                others = list(self.names.values())\n"
        "        if was_here:\n",
        "            self.names.pop(key, None)\n            others = list(self.names.values())\n        if True:\n"),),
      ("only if",), tags=("closing",)),
    M(6, "/who sorted", "/who lists the names in alphabetical order, not in the order people joined",
      (("                    online = [p.name for p in self.names.values()]\n                peer.send(f\"* Online:",
        "                    online = sorted(p.name for p in self.names.values())\n                peer.send(f\"* Online:"),),
      ("order", "joined")),
    M(6, "unknown commands chatted", "an unknown /command is sent to the room as chat",
      (("            peer.send(f\"! unknown command {command[:40]}; try /who or /quit (unknown_type)\\n\".encode())\n"
        "            return True\n", ""),),
      ("unknown",)),
)
MISTAKES += EX06

# --------------------------------------------------------------- exercise 7
EX07 = (
    M(7, "say sends", "say() sends the line itself, so it blocks while the server is not reading",
      (("        self.outgoing.put(text)\n\n    def close", "        send_all(self.sock, (text + \"\\n\").encode())\n\n    def close"),),
      ("queue",), tags=("partial I/O",)),
    M(7, "no half-close", "the send thread stops at None without shutdown(SHUT_WR), so the server never sees the end",
      (("            self.sock.shutdown(socket.SHUT_WR)\n        except OSError:\n            pass  # the connection is gone; "
        "the receive thread reports it",
        "        except OSError:\n            pass  # the connection is gone; the receive thread reports it"),),
      ("SHUT_WR",), tags=("closing",)),
    M(7, "chunks decoded as lines", "the receive thread splits each recv() chunk at newlines, without a LineDecoder",
      (("                for line in decoder.feed(data):\n                    self.received.put(line.decode(\"utf-8\", \"replace\"))",
        "                for line in data.decode(\"utf-8\", \"replace\").splitlines():\n                    self.received.put(line)"),),
      ("complete",), tags=("framing", "partial I/O")),
    M(7, "no end marker", "the receive thread ends without putting None on received",
      (("        finally:\n            self.received.put(None)\n", ""),
       ("        except (OSError, ValueError):\n            pass  # the connection broke, or the server sent a line too long\n",
        "        except (OSError, ValueError):\n            pass  # the connection broke, or the server sent a line too long\n"
        "        return\n")),
      ("None",), tags=("closing",)),
    M(7, "threads not joined", "close() closes the socket without waiting for the two threads",
      (("        self.sender.join(CLOSE_WAIT)\n        self.receiver.join(CLOSE_WAIT)\n", ""),),
      ("join",), tags=("closing",)),
    M(7, "name not sent", "the client never queues its name, so the server waits for it",
      (("        self.outgoing.put(name)\n        self.sender = ", "        self.sender = "),),
      ("name", "first"),),
    M(7, "receiver never woken", "close() gives up waiting for the server but leaves the receive thread in recv()",
      (("        if self.receiver.is_alive():\n            # The server did not close in time: cut the connection ourselves.\n"
        "            try:\n                self.sock.shutdown(socket.SHUT_RDWR)\n            except OSError:\n"
        "                pass\n            self.receiver.join(CLOSE_WAIT)\n", ""),),
      ("shutdown", "SHUT_RDWR"), tags=("closing",)),
)
MISTAKES += EX07

# --------------------------------------------------------------- exercise 8
EX08 = (
    M(8, "buffer emptied after a partial send", "write() empties the whole output buffer after send(), even when "
      "send() took only part of it: the rest is lost",
      (("        del peer.outbuf[:sent]\n", "        peer.outbuf.clear()\n"),),
      ("del peer.outbuf[:sent]",), tags=("partial I/O", "buffers")),
    M(8, "always watching for writable", "write() never stops watching a client for EVENT_WRITE once its buffer "
      "is empty, so select() returns at once for ever",
      (("            if peer.closing:\n                self.close(peer, peer.closing)\n            else:\n"
        "                self.selector.modify(peer.sock, selectors.EVENT_READ, peer)\n",
        "            if peer.closing:\n                self.close(peer, peer.closing)\n"),),
      ("EVENT_WRITE", "empty"), tags=("buffers",)),
    M(8, "no buffer limit", "queue() lets a client's output buffer grow without a limit",
      (("        if len(peer.outbuf) + len(data) > self.outbuf_limit:\n            self.close(peer, \"too_slow\")\n"
        "            return\n", ""),),
      ("limit",), tags=("buffers", "limits")),
    M(8, "never closed after goodbye", "write() sends the goodbye but never closes a client that is leaving",
      (("            if peer.closing:\n                self.close(peer, peer.closing)\n            else:\n",
        "            if not peer.closing:\n"),),
      ("close", "write()"), tags=("closing",)),
    M(8, "end of stream ignored", "read() treats b\"\" as no data, so a client that closed is never noticed",
      (("        if not data:\n            self.close(peer, \"disconnected\")\n            return\n", ""),),
      ('b""', "gone"), tags=("closing",)),
    M(8, "never watched for writable", "queue() appends to the buffer but never asks the selector for EVENT_WRITE",
      (("        events = selectors.EVENT_WRITE if peer.closing else selectors.EVENT_READ | selectors.EVENT_WRITE\n"
        "        self.selector.modify(peer.sock, events, peer)\n", ""),),
      ("EVENT_WRITE",), tags=("buffers",)),
    M(8, "select without a timeout", "the loop waits in select() with no timeout, so it never sees the stop flag",
      (("                for key, events in self.selector.select(timeout=ACCEPT_WAIT):",
        "                for key, events in self.selector.select():"),),
      ("ACCEPT_WAIT",), tags=("closing",)),
)
MISTAKES += EX08

# --------------------------------------------------------------- exercise 9
EX09 = (
    M(9, "no outbox limit", "send() queues whatever comes, so a client that never reads fills the server's memory",
      (("            if self.size + len(data) > self.server.outbox_limit:\n                overflow = True\n"
        "            else:\n                self.chunks.append(data)\n                self.size += len(data)\n"
        "                self.ready.notify()\n",
        "            self.chunks.append(data)\n            self.size += len(data)\n            self.ready.notify()\n"),),
      ("outbox_limit",), tags=("limits", "buffers")),
    M(9, "sendall under the lock", "the writer sends while holding the outbox's lock, so send() waits for the network",
      (("                    data = b\"\".join(self.chunks)\n                    self.chunks.clear()\n"
        "                    self.size = 0\n                self.sock.sendall(data)",
        "                    data = b\"\".join(self.chunks)\n                    self.chunks.clear()\n"
        "                    self.size = 0\n                    self.sock.sendall(data)"),),
      ("never wait",), tags=("locking", "buffers")),
    M(9, "size never reset", "the writer takes the chunks but leaves self.size as it was, so a healthy client "
      "looks ever fuller",
      (("                    self.chunks.clear()\n                    self.size = 0\n", "                    self.chunks.clear()\n"),),
      ("count", "writer takes"), tags=("buffers", "limits")),
    M(9, "too slow but still connected", "too_slow() tells the room but leaves the client connected",
      (("        self.on_close(peer, \"too_slow\")\n        peer.close_outbox()\n        peer.abort()",
        "        self.on_close(peer, \"too_slow\")\n        peer.close_outbox()"),),
      ("close its connection",), tags=("closing",)),
    M(9, "outbox never closed", "serve() ends without closing the outbox, so the writer waits for ever",
      (("        try:\n            super().serve(peer)\n        finally:\n            peer.close_outbox()\n"
        "            peer.writer.join(STOP_WAIT)",
        "        super().serve(peer)"),),
      ("outbox", "writer"), tags=("closing",)),
    M(9, "writer never woken", "send() queues the data but never notifies the writer, which waits for ever",
      (("                self.size += len(data)\n                self.ready.notify()\n", "                self.size += len(data)\n"),),
      ("notify",), tags=("locking",)),
)
MISTAKES += EX09

# -------------------------------------------------------------- exercise 10
EX10 = (
    M(10, "native byte order", "parse_ipv4's struct format lacks \"!\": the fields are read in this machine's "
      "(little-endian) byte order",
      (('struct.unpack_from("!BBHHHBBH4s4s", packet)', 'struct.unpack_from("BBHHHBBH4s4s", packet)'),),
      ("network byte order",), tags=("framing",)),
    M(10, "IHL taken as bytes", "the IPv4 header length is IHL itself, not IHL * 4",
      (("header_length = (first & 0x0F) * 4", "header_length = first & 0x0F"),),
      ("32-bit words",), tags=("framing",)),
    M(10, "IPv4 header always 20 bytes", "the IPv4 payload is cut at byte 20, whatever IHL says (options forgotten)",
      (("return header, packet[header_length:total_length]", "return header, packet[20:total_length]"),),
      ("options", "header_length"), tags=("framing",)),
    M(10, "TCP options ignored", "the TCP payload starts at byte 20, not at the data offset",
      (("window, segment[header_length:])", "window, segment[20:])"),),
      ("options", "data offset"), tags=("framing",)),
    M(10, "data offset taken as bytes", "the TCP header length is the data offset itself, not offset * 4",
      (("header_length = (offset >> 4) * 4", "header_length = offset >> 4"),),
      ("32-bit words",), tags=("framing",)),
    M(10, "flags compared with ==", "a flag counts as set only when it is the only one set (flags == bit)",
      (("if flags & bit)", "if flags == bit)"),),
      ("several flags", "&"), tags=("framing",)),
    M(10, "ACK counted from its own ISN", "the acknowledgment number is made relative to the sender's own ISN",
      (("ack = (tcp.ack - isn[other]) % WRAP", "ack = (tcp.ack - isn[me]) % WRAP"),),
      ("other side",)),
    M(10, "no wrap at 2**32", "relative numbers are plain differences: negative once the numbers wrap",
      (("ack = (tcp.ack - isn[other]) % WRAP if", "ack = (tcp.ack - isn[other]) if"),
       ("(tcp.seq - isn[me]) % WRAP,", "(tcp.seq - isn[me]),")),
      ("wrap",), tags=("limits",)),
    M(10, "the last FIN closes", "closing() names the sender of the last FIN, not of the first",
      (('    for segment in segments:\n        if "RST" in segment.flags:',
        '    for segment in reversed(segments):\n        if "RST" in segment.flags:'),),
      ("first FIN",), tags=("closing",)),
)
MISTAKES += EX10
