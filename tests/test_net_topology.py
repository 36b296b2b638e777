"""Hosts of the lab's network: real namespaces with IPv4 and IPv6 addresses and routes, joined by the router."""

from __future__ import annotations

import errno
import socket
import struct

import pytest

from chatlab import net
from chatlab.net import netns
from net_support import needs_network, needs_nft, needs_tshark, network, tshark_fields  # noqa: F401 (fixture)

pytestmark = [needs_network, pytest.mark.timeout(60)]


def test_hosts_have_addresses_v4_and_v6_and_routes(network: net.Network) -> None:
    a, b = network.host("a"), network.host("b")
    assert (a.address, a.address6, b.address, b.address6) == ("10.0.0.1", "fd00::1", "10.0.0.2", "fd00::2")
    assert a.namespace.startswith(f"chl-{network.token}-") and a.namespace in netns.namespaces()
    shown = a.ip("address", "show", "dev", "eth0")
    assert "inet 10.0.0.1/24" in shown and "inet6 fd00::1/64" in shown
    routes, routes6 = a.ip("route"), a.ip("-6", "route")
    assert "default dev eth0" in routes and "10.0.0.0/24 dev eth0" in routes
    assert "default dev eth0" in routes6 and "fd00::/64 dev eth0" in routes6
    assert "lo" in a.ip("link", "show", "up")  # its own loopback, up


def test_a_connection_crosses_the_router_in_ipv4_and_ipv6(network: net.Network) -> None:
    a, b = network.host("a"), network.host("b")
    for family, where, there in ((socket.AF_INET, "0.0.0.0", b.address), (socket.AF_INET6, "::", b.address6)):
        listener = b.socket(family)
        try:
            listener.bind((where, 0))
            listener.listen()
            client = a.connect((there, listener.getsockname()[1]))
            served, peer = listener.accept()
            with client, served:
                # The server sees the client's own address and the ephemeral port its kernel chose.
                assert peer[:2] == client.getsockname()[:2]
                assert peer[0] == (a.address if family == socket.AF_INET else a.address6)
                client.sendall(b"hello")
                assert served.recv(5) == b"hello"
        finally:
            listener.close()


def test_each_host_has_its_own_ports_and_its_own_loopback(network: net.Network) -> None:
    a, b = network.host("a"), network.host("b")
    # The same port number on two hosts: no "address already in use".
    la, lb = a.socket(), b.socket()
    with la, lb:
        la.bind(("0.0.0.0", 5050))
        lb.bind(("0.0.0.0", 5050))
    # A server on b's 127.0.0.1 cannot be reached from a: b's kernel answers a's SYN with a RST.
    srv = b.start_server("threads", host="127.0.0.1")
    with pytest.raises(ConnectionRefusedError):
        a.connect((b.address, srv.address[1]))
    b.connect(("127.0.0.1", srv.address[1])).close()  # but b itself can
    srv.stop()
    # The same server on 0.0.0.0 takes a's connection.
    srv = b.start_server("threads", host="0.0.0.0")
    bot = a.bot((b.address, srv.address[1]), "ada")
    assert bot.ping() > 0


def test_the_router_lowers_the_ttl_and_keeps_the_checksum_right(network: net.Network) -> None:
    a, b = network.host("a"), network.host("b")
    rx = b.call(socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
    tx = a.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with rx, tx:
        rx.bind(("0.0.0.0", 9999))
        rx.settimeout(5)
        tx.sendto(b"ttl?", (b.address, 9999))
        assert rx.recv(10) == b"ttl?"
    sent = [r.data for r in network.packets(a) if r.data[9] == socket.IPPROTO_UDP]
    got = [r.data for r in network.packets(b) if r.data[9] == socket.IPPROTO_UDP]
    assert sent[0][8] == 64 and got[0][8] == 63  # one router: one hop less

    def checksum(header: bytes) -> int:
        total = sum(struct.unpack(f"!{len(header) // 2}H", header))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        return total

    assert checksum(got[0][:20]) == 0xFFFF  # a valid IPv4 header sums to all ones (RFC 791)


def test_an_address_no_host_has_is_dropped_as_no_route(network: net.Network) -> None:
    a = network.host("a")
    network.host("b")
    sock = a.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.sendto(b"anyone?", ("10.0.0.99", 9))
    drops = network.drops()
    assert [d.why for d in drops] == ["no route"] and drops[0].src == "a" and drops[0].data.endswith(b"anyone?")
    assert network.stats()["dropped"] == {"no route": 1}


@needs_tshark
def test_tshark_reads_the_router_captures(network: net.Network) -> None:
    a, b = network.host("a"), network.host("b")
    srv = b.start_server("threads")
    bot = a.bot((b.address, srv.address[1]), "ada")
    bot.say("hello from a")
    bot.wait_for(lambda m: m.get("type") == "message" and m.get("text") == "hello from a")
    path = network.pcap(a)
    rows = tshark_fields(path, "ip.src", "ip.dst", "tcp.srcport", "tcp.dstport", "tcp.flags.syn", "tcp.flags.ack",
                         display_filter="tcp")
    assert rows, "tshark found no TCP in the capture"
    first = rows[0]
    client_port = str(bot.sock.getsockname()[1])
    assert first == ["10.0.0.1", "10.0.0.2", client_port, str(srv.address[1]), "1", "0"]  # the SYN, from a
    assert rows[1][:2] == ["10.0.0.2", "10.0.0.1"] and rows[1][4:] == ["1", "1"]  # the SYN-ACK, from b
    payloads = b"".join(bytes.fromhex(row[0].replace(":", "")) for row in tshark_fields(path, "tcp.payload") if row[0])
    assert b"hello from a" in payloads  # the chat message itself, in the clear, on the wire


def test_chatlab_serve_runs_on_a_host_as_a_process(network: net.Network) -> None:
    a, b = network.host("a"), network.host("b")
    server = b.serve("--model", "selectors")
    assert server.address[0] == "0.0.0.0" and server.port > 0
    assert any("listening on" in line for line in server.lines)
    bot = a.bot((b.address, server.port), "ada")
    assert bot.ping() > 0
    # The process really is inside b's namespace.
    assert str(server.pid) in netns.ip("netns", "pids", b.namespace).split()


def test_a_command_runs_on_a_host(network: net.Network) -> None:
    a = network.host("a")
    out = a.run(["ip", "-brief", "address"]).stdout
    assert "eth0" in out and "10.0.0.1/24" in out
    with pytest.raises(RuntimeError, match="failed"):
        a.run(["ip", "link", "show", "nonesuch"])


@needs_nft
def test_a_firewall_drops_syns_so_connect_times_out(network: net.Network) -> None:
    a, b = network.host("a"), network.host("b")
    srv = b.start_server("threads")
    b.block(srv.address[1])
    with pytest.raises(OSError) as caught:
        a.connect((b.address, srv.address[1]), timeout=1.5)
    assert isinstance(caught.value, TimeoutError) or caught.value.errno == errno.ETIMEDOUT
    syns = [r for r in network.packets(a) if r.data[9] == socket.IPPROTO_TCP and r.data[33] & 0x12 == 0x02]
    assert len(syns) >= 2, "the client's kernel should have sent the SYN again (a retry) within 1.5 s"
    assert not [r for r in network.packets(a) if r.data[12:16] == socket.inet_aton(b.address)], \
        "b answered nothing: not a SYN-ACK, not a RST"
    b.unblock()
    a.connect((b.address, srv.address[1])).close()


def test_hosts_are_named_sensibly(network: net.Network) -> None:
    network.host("a")
    for bad in ("A", "1a", "a b", "x" * 30, "a;rm"):
        with pytest.raises(ValueError, match="host name"):
            network.host(bad)
    with pytest.raises(ValueError, match="already"):
        network.host("a")
    with pytest.raises(ValueError, match="not in this network"):
        network.host("c", address="192.168.9.9")
    with pytest.raises(ValueError, match="no host"):
        network.link("a", "nobody")


def test_two_networks_at_once_with_the_same_host_names() -> None:
    with net.Network() as one, net.Network() as two:
        a1, a2 = one.host("a"), two.host("a")
        assert a1.namespace != a2.namespace and a1.address == a2.address
        b1 = one.host("b")
        srv = b1.start_server("threads")
        a1.bot((b1.address, srv.address[1]), "ada")
        with pytest.raises(OSError):  # network two has no b: 10.0.0.2 does not exist there
            a2.connect(("10.0.0.2", srv.address[1]), timeout=0.5)


def test_the_counters_include_every_packet_sent_before_asking(network: net.Network) -> None:
    a, b = network.host("a"), network.host("b")
    sock = a.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        for i in range(300):  # fewer than a TUN device queues (500): none is dropped before the router
            sock.sendto(b"%d" % i, (b.address, 9))
    # No waiting: the router reads what is already queued before it answers.
    assert network.stats()["links"]["a>b"]["packets"] == 300
    assert len([r for r in network.packets(a) if r.data[9] == socket.IPPROTO_UDP]) >= 300
