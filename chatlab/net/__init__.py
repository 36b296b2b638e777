"""The network lab: hosts and links on one machine, and the packets themselves on screen.

Loopback has no delay, no loss, no second host and shows no packet; this
package gives the lab a network and puts what crosses it on screen.  One
module per subject, each readable on its own.

The network itself -- hosts, links, the router -- in the order they build
on each other:

* ``netns`` -- network namespaces (the hosts' separate network stacks):
  made, entered from Python (``call_in``), removed; ``problem()`` and
  ``require()`` say whether this process may build networks at all (Linux
  and root); ownership records, and ``clean()`` for what a crash left;
* ``link`` -- what a link does to packets, with no I/O: delay, jitter,
  loss (random, or in Gilbert-Elliott bursts), duplication, reordering,
  and a rate with a queue of limited size (tail drop);
* ``router`` -- the router, a process of its own: it moves IP packets
  between the hosts' TUN devices, applies each link, and writes a pcap
  capture of every host's wire and of what it dropped.  Read it: a router
  is a program that moves packets;
* ``host`` -- ``Host``: running things on a host, in this process (servers,
  bots, sockets: ``call``) or as commands (``ip netns exec``: ``popen``,
  ``serve``); its firewall (``nft``, ``block``); ``TcpInfoSampler``;
* ``topology`` -- ``Network``, the one class a notebook needs:
  ``with Network() as n: a = n.host("a"); n.link(a, b, delay=0.02)``;
* ``traffic`` -- ``Bulk`` and ``bulk_transfer``: one TCP connection kept
  full between two hosts, for throughput and queues;
* ``bench`` -- ``chatlab net bench``: the router's forwarding rate and the
  accuracy of its delays on this machine.

The packets on screen:

* ``pcap`` -- capture files in the classic pcap format (``PcapWriter``,
  ``read_pcap``), the format Wireshark, tshark and tcpdump read;
* ``packets`` -- the headers of a packet taken apart with ``struct``:
  Ethernet, IPv4, IPv6, TCP (with its options), UDP, ICMP;
* ``capture`` -- ``Capture`` and ``chatlab capture``: packets from a raw
  socket on an interface (loopback or a host's), written to pcap;
* ``conversation`` -- each TCP connection of a capture, its segments in
  order with relative sequence numbers, the chat messages they carry,
  retransmissions, duplicate and delayed ACKs;
* ``diagram`` -- sequence diagrams of those conversations (matplotlib).

``chatlab doctor`` (``chatlab/doctor.py``) uses none of it: it diagnoses a
connection from the outside, with sockets alone.
"""

from .host import Host, Process, ServerProcess, TcpInfoSampler
from .link import Direction, Fate, GilbertElliott, Impairment
from .netns import NetworkUnavailable, clean, problem, require
from .topology import Drop, Link, Network
from .traffic import Bulk, Throughput, bulk_transfer

__all__ = [
    "Bulk", "Direction", "Drop", "Fate", "GilbertElliott", "Host", "Impairment", "Link", "Network", "NetworkUnavailable",
    "Process", "ServerProcess", "TcpInfoSampler", "Throughput", "bulk_transfer", "clean", "problem",
    "require",
]
