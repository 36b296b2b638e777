"""Where people find the chat page: its URL on each address of this machine, and a QR code for phones.

``chatlab serve --web-port 8080`` prints the page's URL.  Bound to
``127.0.0.1`` only this machine can open it; bound to ``0.0.0.0`` or
``::`` (every interface, for a classroom) the URL that others need holds
one of this machine's LAN addresses, which the server cannot know from
its socket, so they are looked up here, and the first is drawn as a QR
code in the terminal (segno) for a phone's camera.
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
from typing import TextIO

EVERYWHERE = ("0.0.0.0", "::", "")


def url(host: str, port: int, secure: bool = False) -> str:
    """The page's URL at ``host`` (brackets around an IPv6 address)."""
    netloc = f"[{host}]" if ":" in host else host
    return f"{'https' if secure else 'http'}://{netloc}:{port}/"


def lan_addresses(ipv6: bool = True) -> list[str]:
    """This machine's addresses that another machine could reach: no loopback, no link-local.

    On Linux ``ip -brief addr`` lists every interface's; elsewhere (or if
    that fails) the address the kernel would send from towards the
    Internet is found with a UDP socket that sends nothing.
    """
    found: list[str] = []
    try:
        listing = subprocess.run(["ip", "-brief", "address"], capture_output=True, text=True, timeout=5).stdout
        for line in listing.splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[1] in ("UP", "UNKNOWN"):
                found += [cidr.split("/")[0] for cidr in fields[2:]]
    except (OSError, subprocess.SubprocessError):
        pass
    for family, probe in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as udp:
                udp.connect((probe, 9))  # UDP connect only picks a route and a source address
                found.append(udp.getsockname()[0])
        except OSError:
            pass
    addresses: list[str] = []
    for text in dict.fromkeys(found):
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if address.is_loopback or address.is_link_local or address.is_unspecified:
            continue
        if address.version == 6 and not ipv6:
            continue
        addresses.append(text)
    return sorted(addresses, key=lambda a: (":" in a, a))  # IPv4 first: easier to type


def page_urls(host: str, port: int, secure: bool = False) -> list[str]:
    """The URLs people can open: the host itself, or with every interface, each LAN address."""
    if host not in EVERYWHERE:
        return [url(host, port, secure)]
    return [url(a, port, secure) for a in lan_addresses(ipv6=host == "::")] or [url("127.0.0.1", port, secure)]


def print_qr(text: str, out: TextIO) -> bool:
    """Draw ``text`` as a QR code in the terminal; False if segno (the ``web`` extra) is missing."""
    try:
        import segno
    except ImportError:
        return False
    segno.make(text, error="m").terminal(out=out, compact=True)
    return True
