"""The network lab: hosts and links on one machine, and the packets themselves on screen.

Loopback has no delay, no loss, no second host and shows no packet; this
package gives the lab a network and puts what crosses it on screen.  One
module per subject, each readable on its own:

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
