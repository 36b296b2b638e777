"""``chatlab doctor``: why a connection fails, said in plain words, with the next step.

"It doesn't connect" has a handful of causes, and each leaves a different
trace on the wire.  The doctor tries, step by step, what a client does, and
reads the trace:

1. **the name**: ``getaddrinfo`` turns a host name into addresses.  No
   address at all: a typo, or a name only another network knows.
2. **the TCP handshake**: the client sends a SYN.
   * a SYN-ACK comes back: something listens there (``connect`` returns);
   * an RST comes back: the machine is there, but no program listens on
     that port -- *connection refused*.  Often the server listens on
     127.0.0.1 only (``chatlab serve``'s safe default), which only its own
     machine can reach;
   * nothing comes back: the kernel sends the SYN again, waiting twice as
     long each time, until the doctor gives up -- a firewall dropping the
     SYNs, or an address that is not on this network;
   * an ICMP "unreachable" comes back: no route to that address.
3. **the first words**: a chatlab server speaks first, at once, with its
   banner ``chatlab/1 ...``.  Something else may answer: an HTTP server
   (which waits for a request, and answers one), a TLS server (which waits
   for a TLS ClientHello), or a program that accepts and never says a word.
4. **a ping**: a ``ping`` frame, answered by a ``pong``: a chatlab server
   that works.

``chatlab doctor --port N`` looks at the other side, before serving: is the
port free, and if not, which process holds it (from ``/proc``: PID and
command line).

The doctor exits 0 only when a chatlab server answered; 1 when it found a
problem; 3 when ``--port N`` found the port free (nothing to fix, nothing
answered); 2 for a usage error.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
import ssl
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .framing import FrameDecoder, FramingError, encode_frame
from .servers import DEFAULT_PORT, format_address

#: Seconds a TCP connect may take before the doctor calls it "no answer".
CONNECT_TIMEOUT = 3.0
#: Seconds a server has to say its first words (a chatlab server speaks at once), or to answer a probe.
ANSWER_WAIT = 2.0
#: Bytes of an unexpected answer shown.
SHOWN = 60

# Exit codes.
OK, PROBLEM, USAGE, PORT_FREE = 0, 1, 2, 3


@dataclass
class Report:
    """What the doctor tried and saw (``steps``), what it means, and what to do."""

    title: str
    steps: list[str] = field(default_factory=list)
    case: str = ""  # a short name for what was found: "ok", "refused", "no_answer", "http", ...
    diagnosis: str = ""
    next_step: str = ""

    @property
    def ok(self) -> bool:
        return self.case == "ok" or self.case == "chatlab_on_port"

    def step(self, text: str) -> None:
        self.steps.append(text)

    def found(self, case: str, diagnosis: str, next_step: str) -> "Report":
        self.case, self.diagnosis, self.next_step = case, diagnosis, next_step
        return self

    def text(self) -> str:
        lines = [f"chatlab doctor: {self.title}"]
        lines += [f"  {i}. {step}" for i, step in enumerate(self.steps, 1)]
        verdict = "Good" if self.ok else "Result" if self.case == "port_free" else "Diagnosis"
        lines.append(f"{verdict}: {self.diagnosis}")
        if self.next_step:
            lines.append(f"Next: {self.next_step}")
        return "\n".join(lines)

    @property
    def exit_code(self) -> int:
        return OK if self.ok else PORT_FREE if self.case == "port_free" else PROBLEM


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _show(data: bytes) -> str:
    text = data[:SHOWN].decode("utf-8", "replace").splitlines()[0] if data.strip() else data[:SHOWN].hex(" ")
    return repr(text) + ("..." if len(data) > SHOWN else "")


# ============================================================ dialling a server


def diagnose(host: str, port: int = DEFAULT_PORT, tls: bool = False, cafile: str | None = None,
             timeout: float = CONNECT_TIMEOUT) -> Report:
    """Connect to ``host:port`` the way a client would, and say what went wrong (or that all is well)."""
    where = format_address((host, port))
    report = Report(f"checking {where}" + (" with TLS" if tls else " (plain TCP)"))

    # 1. The name.
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        report.step(f"look up {host!r}: no address ({exc.strerror})")
        return report.found("unresolved", f"the name {host!r} does not resolve to any address.",
                            "check its spelling; or use the server's IP address (on the server, 'ip addr' or "
                            "'ipconfig' shows it), e.g. 'chatlab doctor 192.168.1.20:%d'." % port)
    # Each answer's socket address: (ip, port) for IPv4, (ip, port, flow, scope) for IPv6; we dial (ip, port).
    # An address family this Python does not know comes as (family, raw bytes): none a TCP connect could use.
    addresses = list(dict.fromkeys(info[4][:2] for info in infos if isinstance(info[4][0], str)))
    if _is_ip(host):
        report.step(f"{host} is an IP address: nothing to look up")
    else:
        report.step(f"look up {host!r}: {', '.join(a for a, _ in addresses)}")

    # 2. The TCP handshake, to each address in turn (as a client does).
    failures: list[tuple[tuple[str, int], str]] = []
    for address in addresses:
        sock, outcome = _connect(address, timeout, report)
        if sock is not None:
            with sock:
                return _first_words(report, sock, address, host, tls, cafile, timeout)
        failures.append((address, outcome))
    return _why_no_connection(report, failures, port, timeout)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _connect(address: tuple[str, int], timeout: float, report: Report) -> tuple[socket.socket | None, str]:
    """One TCP connect: the socket, or why not ("refused", "no_answer", "no_route", "error")."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    start = time.perf_counter()
    where = format_address(address)
    try:
        sock.connect(address)
    except ConnectionRefusedError:
        sock.close()
        report.step(f"TCP connect to {where}: refused after {_ms(time.perf_counter() - start)} -- the machine "
                    "answered the SYN with a reset (RST): no program listens on that port")
        return None, "refused"
    except (TimeoutError, socket.timeout):
        sock.close()
        report.step(f"TCP connect to {where}: no answer within {timeout:g} s -- the SYN was sent, then sent "
                    "again, and neither a SYN-ACK nor a reset came back")
        return None, "no_answer"
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL):
            report.step(f"TCP connect to {where}: {exc.strerror} -- there is no way to that address from here")
            return None, "no_route"
        report.step(f"TCP connect to {where}: {exc.strerror or exc}")
        return None, "error"
    report.step(f"TCP connect to {where}: connected in {_ms(time.perf_counter() - start)} (SYN, SYN-ACK, ACK): "
                f"something listens there; this end is {format_address(sock.getsockname()[:2])}")
    return sock, "connected"


def _why_no_connection(report: Report, failures: list[tuple[tuple[str, int], str]], port: int,
                       timeout: float) -> Report:
    outcomes = {outcome for _, outcome in failures}
    (host, _), first = failures[0]
    where = format_address((host, port))
    if "refused" in outcomes:
        dialled = [address for address, outcome in failures if outcome == "refused"]
        local = [entry for entry in listeners(port) if ipaddress.ip_address(entry.address).is_loopback]
        remote_dial = [a for a, _ in dialled if not ipaddress.ip_address(a).is_loopback]
        if local and remote_dial:
            holder = local[0]
            report.step(f"on this machine, {holder.describe()}")
            return report.found(
                "loopback_only",
                f"a server listens on {format_address((holder.address, port))} only, the loopback address: only "
                f"programs on its own machine reach it, and you dialled {remote_dial[0]}.",
                f"restart the server with --host 0.0.0.0 (every interface): 'chatlab serve --host 0.0.0.0 --port "
                f"{port}'; or dial {holder.address} from this machine.")
        hint = (f"start the server: 'chatlab serve --port {port}' (it prints where it listens); or check the port "
                "is the one it printed.")
        if remote_dial:
            hint += (f" If it runs already on {remote_dial[0]}, it probably listens on 127.0.0.1 only (the "
                     "default), which other machines cannot reach: restart it there with --host 0.0.0.0.")
        return report.found("refused", f"nothing listens on {where}: connection refused.", hint)
    if "no_answer" in outcomes:
        return report.found(
            "no_answer",
            f"no answer at all from {where}: the SYNs were dropped on the way (a firewall on the server's machine "
            f"or in between), or {host} is not on this network.",
            "check that both machines are on the same network (compare 'ip addr' on each; ping it); allow the "
            f"port in the server machine's firewall (Windows and macOS ask the first time: allow Python on private "
            f"networks; Linux: 'sudo nft list ruleset' or 'sudo ufw allow {port}/tcp').")
    if "no_route" in outcomes:
        return report.found("no_route", f"there is no route to {host} from this machine.",
                            "you are not on the server's network: check the address, and join the same network "
                            "(the same Wi-Fi, or the VPN).")
    return report.found("error", f"cannot connect to {where}.", "check the address and port.")


def _first_words(report: Report, sock: socket.socket, address: tuple[str, int], host: str, tls: bool,
                 cafile: str | None, timeout: float) -> Report:
    """Connected: what does it say first?  A chatlab server sends its banner at once."""
    first = _read_some(sock, ANSWER_WAIT)
    where = format_address(address)
    if first is None:
        report.step(f"waited {ANSWER_WAIT:g} s for a banner: it said nothing (a chatlab server speaks first)")
        return _silent(report, address, host, tls, cafile, timeout)
    if first == b"":
        report.step("it closed the connection without a word")
        return report.found("closed", f"the program on {where} accepts connections and closes them at once.",
                            "it is not a working chatlab server: check the port ('chatlab doctor --port "
                            f"{address[1]}' on that machine shows which program holds it).")
    if not first.startswith(b"chatlab/"):
        report.step(f"it spoke first, but not as chatlab: {_show(first)}")
        return report.found("not_chatlab", f"another program answers on {where}: {_show(first)}.",
                            f"this is not a chatlab server: is the port right? (chatlab's default is {DEFAULT_PORT}; "
                            f"'chatlab doctor --port {address[1]}' on that machine shows which program holds it)")
    banner = _line(sock, first)
    report.step(f"banner: {_show(banner)}")
    if banner.split()[1:2] == [b"closing"]:
        return report.found("refusing", f"a chatlab server answered, and refused the connection: "
                                        f"{banner.decode('utf-8', 'replace').split(' ', 2)[-1]}",
                            "wait a moment, or close some clients (the server limits connections per address "
                            "and in all: docs/security.md).")
    if tls:
        return report.found("plain_server",
                            f"TLS on your side only: the server on {where} speaks plain TCP (its banner arrived "
                            "unencrypted), and you asked for TLS.",
                            "connect without --tls; or, for encryption, restart the server with --tls "
                            "(and a certificate from 'chatlab certs').")
    return _ping(report, sock, where, "")


def _ping(report: Report, conn, where: str, how: str) -> Report:
    """Send a ``ping`` frame, wait for the ``pong``: proof of a working chatlab server."""
    start = time.perf_counter()
    try:
        conn.sendall(encode_frame(json.dumps({"type": "ping", "id": "doctor"}).encode()))
        reply = _read_frame(conn, ANSWER_WAIT)
    except (OSError, FramingError, ValueError) as exc:
        reply, problem = None, str(exc)
    else:
        problem = "no pong" if reply is None else ""
    if reply and reply.get("type") == "pong":
        report.step(f"ping frame: pong in {_ms(time.perf_counter() - start)}")
        try:
            conn.sendall(encode_frame(json.dumps({"type": "bye"}).encode()))
        except OSError:
            pass
        return report.found("ok", f"a chatlab server answered on {where}{how}.",
                            f"chat with it: 'chatlab chat{' --tls' if how else ''} {where}'.")
    report.step(f"ping frame: {problem or 'answered ' + repr(reply)[:SHOWN]}")
    return report.found("not_chatlab", f"the program on {where} sends a chatlab banner, but does not answer a ping.",
                        "it may be a chatlab server of another version, or broken: look at its log.")


def _silent(report: Report, address: tuple[str, int], host: str, tls: bool, cafile: str | None,
            timeout: float) -> Report:
    """It said nothing: a TLS server (waits for a ClientHello), an HTTP server (waits for a request), or mute."""
    where = format_address(address)
    kind, answer = _probe_tls(address, host, timeout)
    if kind == "tls":
        report.step("sent a TLS ClientHello: it answered with a TLS handshake")
        if not tls:
            inside = _banner_over_tls(address, timeout)
            if inside:
                report.step(f"over TLS (certificate not checked), banner: {_show(inside)}")
            return report.found(
                "tls_server", f"TLS on the server's side only: the server on {where} speaks TLS"
                              f"{' (a chatlab server)' if inside else ''}, and you connected in plain TCP.",
                f"connect with TLS and the lab's CA file: 'chatlab chat --tls --cafile ca.pem {where}' "
                f"(and 'chatlab doctor --tls --cafile ca.pem {where}').")
        return _over_tls(report, address, host, cafile, timeout)
    report.step("sent a TLS ClientHello: " + {"closed": "it closed the connection without an answer",
                                              "other": f"it answered {_show(answer)}, not TLS",
                                              "silent": f"no answer within {ANSWER_WAIT:g} s"}[kind])
    # Not TLS.  An HTTP server waits for a request, and answers even a bad one: ask it one.
    http = _probe_http(address, host, timeout)
    if http is not None and http.startswith(b"HTTP/"):
        server = next((line for line in http.split(b"\r\n") if line.lower().startswith(b"server:")), b"")
        report.step(f"sent an HTTP request: it answered {_show(http)}{' (' + server.decode() + ')' if server else ''}")
        return report.found("http", f"a web (HTTP) server answers on {where}, not a chatlab server.",
                            f"wrong port? chatlab's default is {DEFAULT_PORT}; 'chatlab doctor --port {address[1]}' "
                            "on that machine shows which program holds it.")
    report.step("sent an HTTP request: " + ("no answer" if http is None else "it closed the connection" if not http
                                            else f"it answered {_show(http)}"))
    if kind == "closed":
        return report.found("closed", f"the program on {where} accepts connections, says nothing, and closes "
                                      "when spoken to.", "it is not a chatlab server: check the port.")
    if kind == "other":
        return report.found("not_chatlab", f"another program answers on {where}: {_show(answer)}.",
                            "this is not a chatlab server: is the port right?")
    return report.found("silent", f"something on {where} accepts connections but says nothing, ever: not a chatlab "
                                  "server (no banner), nor TLS, nor HTTP.",
                        f"another program holds the port, or the server is stuck: on that machine, 'chatlab doctor "
                        f"--port {address[1]}' shows which program it is.")


def _over_tls(report: Report, address: tuple[str, int], host: str, cafile: str | None, timeout: float) -> Report:
    """The TLS handshake a client does, certificate checked; then the banner and a ping, encrypted."""
    from .tls import client_context

    where = format_address(address)
    try:
        context = client_context(cafile)
    except (OSError, ssl.SSLError) as exc:
        report.step(f"load the CA file {cafile}: {exc}")
        return report.found("bad_cafile", f"cannot read the CA file {cafile!r}.",
                            "give the lab's ca.pem (made by 'chatlab certs') with --cafile.")
    try:
        raw = socket.create_connection(address, timeout)
    except OSError as exc:
        report.step(f"TCP connect again: {exc}")
        return report.found("error", f"the second connection to {where} failed.", "try again.")
    with raw:
        try:
            conn = context.wrap_socket(raw, server_hostname=host)
        except ssl.SSLCertVerificationError as exc:
            report.step(f"TLS handshake: the certificate is not trusted ({exc.verify_message})")
            return report.found(
                "untrusted", f"the server on {where} speaks TLS, but its certificate is not trusted "
                             f"({exc.verify_message}).",
                "give the lab's CA file: --cafile ca.pem (from 'chatlab certs'); and dial a name the certificate "
                "lists ('chatlab certs --host NAME' adds one).")
        except (OSError, ssl.SSLError) as exc:
            report.step(f"TLS handshake: failed ({exc})")
            return report.found("tls_failed", f"the TLS handshake with {where} failed: {exc}.",
                                "is the server running with --tls and a valid certificate?")
        with conn:
            report.step(f"TLS handshake: {conn.version()}, certificate trusted for {host}")
            first = _read_some(conn, ANSWER_WAIT)
            if not first or not first.startswith(b"chatlab/"):
                report.step(f"over TLS: {'no banner' if not first else _show(first)}")
                return report.found("not_chatlab", f"the TLS server on {where} is not a chatlab server.",
                                    "is the port right?")
            report.step(f"banner, over TLS: {_show(_line(conn, first))}")
            return _ping(report, conn, where, " over TLS")


def _probe_tls(address: tuple[str, int], host: str, timeout: float) -> tuple[str, bytes]:
    """Send a TLS ClientHello on a new connection and look at the raw answer: "tls", "other", "closed" or
    "silent".  Memory buffers (``ssl.MemoryBIO``) let us see the bytes the server sent back."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # only looking, not trusting
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=None if _is_ip(host) else host)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass  # the ClientHello is ready in `outgoing`
    try:
        with socket.create_connection(address, timeout) as sock:
            sock.sendall(outgoing.read())
            answer = _read_some(sock, ANSWER_WAIT)
    except OSError:
        return "closed", b""
    if answer is None:
        return "silent", b""
    if answer == b"":
        return "closed", b""
    if len(answer) >= 2 and answer[0] in (0x15, 0x16) and answer[1] == 0x03:  # a handshake or alert record
        return "tls", answer
    return "other", answer


def _probe_http(address: tuple[str, int], host: str, timeout: float) -> bytes | None:
    """Send an HTTP request on a new connection; its answer (b"" if it closed, None if it said nothing)."""
    request = f"HEAD / HTTP/1.0\r\nHost: {host}\r\nUser-Agent: chatlab-doctor\r\n\r\n".encode()
    try:
        with socket.create_connection(address, timeout) as sock:
            sock.sendall(request)
            return _read_some(sock, ANSWER_WAIT)
    except OSError:
        return b""


def _banner_over_tls(address: tuple[str, int], timeout: float) -> bytes | None:
    """The first line a TLS server sends once the handshake is over (certificate not checked: only looking)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection(address, timeout) as raw, context.wrap_socket(raw) as conn:
            first = _read_some(conn, ANSWER_WAIT)
            return _line(conn, first) if first and first.startswith(b"chatlab/") else None
    except (OSError, ssl.SSLError):
        return None


def _read_some(sock, wait: float) -> bytes | None:
    """What arrives within ``wait`` seconds: bytes, ``b""`` if the peer closed, None if it said nothing."""
    sock.settimeout(wait)
    try:
        return sock.recv(4096)
    except (TimeoutError, socket.timeout):
        return None
    except ConnectionResetError:
        return b""


def _line(sock, start: bytes) -> bytes:
    """The rest of the first line (a banner is one line, at most a few hundred bytes)."""
    data = start
    while b"\n" not in data and len(data) < 4096:
        more = _read_some(sock, ANSWER_WAIT)
        if not more:
            break
        data += more
    return data.split(b"\n", 1)[0].rstrip(b"\r")


def _read_frame(sock, wait: float) -> dict | None:
    decoder = FrameDecoder()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        data = _read_some(sock, max(deadline - time.monotonic(), 0.01))
        if not data:
            return None
        for frame in decoder.feed(data):
            msg = json.loads(frame)
            if msg.get("type") == "pong":
                return msg
    return None


# ============================================================ before serving


@dataclass(frozen=True)
class Listener:
    """A listening TCP socket of this machine (this network namespace), and the process holding it."""

    address: str
    port: int
    inode: int
    pid: int | None = None
    command: str = ""

    def describe(self) -> str:
        command = " ".join(self.command.split())  # one line, however it was started
        command = command if len(command) <= 100 else command[:97] + "..."
        who = f"PID {self.pid} ({command})" if self.pid else "a process of another user (run as root to see which)"
        return f"{who} -- listens on {format_address((self.address, self.port))}"


def listeners(port: int) -> list[Listener]:
    """Every socket listening on TCP ``port`` here, with its process, read from ``/proc`` (Linux).

    ``/proc/net/tcp`` (and ``tcp6``) list the kernel's TCP sockets: local
    address and port in hex, the state (``0A`` is LISTEN), and the socket's
    inode number.  Each process's ``/proc/PID/fd/`` holds links named
    ``socket:[INODE]`` to the sockets it has open: the one that matches holds
    the port.  (``ss -ltnp`` does the same.)
    """
    found = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            address_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:
                continue
            raw = bytes.fromhex(address_hex)
            # The kernel prints each 32-bit word in this machine's byte order: put them back in network order.
            words = [raw[i:i + 4][::-1] if sys.byteorder == "little" else raw[i:i + 4] for i in range(0, len(raw), 4)]
            address = str(ipaddress.ip_address(b"".join(words)))
            if v6 and address.startswith("::ffff:"):
                address = address[7:]
            found.append(Listener(address, port, inode))
    owners = _socket_owners({entry.inode for entry in found})
    return [Listener(e.address, e.port, e.inode, *owners.get(e.inode, (None, ""))) for e in found]


def _socket_owners(inodes: set[int]) -> dict[int, tuple[int, str]]:
    """inode -> (PID, command line) for the processes we may look into."""
    owners: dict[int, tuple[int, str]] = {}
    if not inodes:
        return owners
    for pid in sorted((int(name) for name in os.listdir("/proc") if name.isdigit()), reverse=True):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:[") and int(target[8:-1]) in inodes:
                    command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
                    owners.setdefault(int(target[8:-1]), (pid, command))
        except OSError:  # not ours to look into, or it just ended
            continue
    return owners


def check_port(port: int) -> Report:
    """Before ``chatlab serve --port N``: is the port free, and if not, who holds it?"""
    report = Report(f"checking port {port} before serving on it")
    busy = []
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as chatlab serve: TIME_WAIT is no obstacle
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind((host, port))
                report.step(f"bind {format_address((host, port))}: free")
            except PermissionError:
                report.step(f"bind {format_address((host, port))}: permission denied")
                return report.found("privileged_port", f"ports below 1024 need root; {port} is one.",
                                    f"serve on a port above 1023: 'chatlab serve --port {DEFAULT_PORT}'.")
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    report.step(f"bind {format_address((host, port))}: {exc.strerror}")
                    continue
                report.step(f"bind {format_address((host, port))}: address already in use")
                busy.append(host)
    if not busy:
        return report.found("port_free", f"port {port} is free: 'chatlab serve --port {port}' can listen on it.",
                            "")
    holders = listeners(port)
    for holder in holders:
        report.step(holder.describe())
    if not holders:
        return report.found("port_in_use", f"port {port} is in use, by a socket this machine's /proc does not show "
                                           "(another network namespace or container?).",
                            f"serve on another port: 'chatlab serve --port {port + 1}'.")
    holder = next((h for h in holders if h.pid), holders[0])
    # Who is it?  Ask it, the way a client would.
    dial = "127.0.0.1" if holder.address in ("0.0.0.0", "::") else holder.address
    answered = diagnose(dial if holder.address != "::" else "::1", port, timeout=ANSWER_WAIT)
    report.step(f"dialled {format_address((dial, port))}: {answered.diagnosis}")
    stop = f"stop it (Ctrl+C in its terminal, or 'kill {holder.pid}')" if holder.pid else "stop it"
    if answered.ok:
        return report.found("chatlab_on_port", f"a chatlab server already runs on port {port} "
                                               f"({'PID %d' % holder.pid if holder.pid else 'another user'}).",
                            f"join it ('chatlab chat {format_address((dial, port))}'), or {stop} to start another; "
                            f"or serve on another port: 'chatlab serve --port {port + 1}'.")
    return report.found("port_in_use", f"port {port} is held by another program: {holder.describe()}.",
                        f"{stop}, or serve on another port: 'chatlab serve --port {port + 1}'.")


# ================================================================ the command


def main(address: tuple[str, int] | None, port: int | None, tls: bool, cafile: str | None, timeout: float,
         out=sys.stdout) -> int:
    """``chatlab doctor``: print the report; the exit code says what was found."""
    if port is not None and address is not None:
        print("chatlab doctor: give HOST:PORT to check a server, or --port N to check a port before serving; "
              "not both", file=sys.stderr)
        return USAGE
    report = check_port(port) if port is not None else diagnose(*(address or ("127.0.0.1", DEFAULT_PORT)),
                                                                  tls=tls or bool(cafile), cafile=cafile,
                                                                  timeout=timeout)
    print(report.text(), file=out, flush=True)
    return report.exit_code
