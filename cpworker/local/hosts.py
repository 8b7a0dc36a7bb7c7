"""Loopback only: where ``cpworker local`` may listen, and which Host headers it answers.

The server hands out job credentials and runs pipelines for anyone who can reach it,
so it listens on loopback only and answers only requests addressed to a loopback
name with its own port. A web page cannot forge the Host header, so a DNS rebinding
attack (``evil.example`` resolving to 127.0.0.1) is refused with 403, as is any name
that is not loopback. Light on imports: the CLI uses it to check ``--host``.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

__all__ = ["host_allowed", "loopback_address"]


def loopback_address(host: str) -> str:
    """The loopback address to listen on for ``host``; ValueError for anything else."""
    address = "127.0.0.1" if host == "localhost" else host
    try:
        loopback = ipaddress.ip_address(address).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"{host}: cpworker local listens on loopback only"
            " (localhost, 127.0.0.0/8 or ::1), never on a network address"
        )
    return address


@lru_cache(maxsize=256)
def host_allowed(host_header: str, port: int) -> bool:
    """Whether a Host header names this server: a loopback name or address and ``port``.

    Loopback names are ``localhost`` and its subdomains (``bucket.localhost``, which S3
    virtual-hosted addressing produces; RFC 6761 keeps them on loopback), 127.0.0.0/8
    and ``[::1]``. A Host without a port means port 80.
    """
    name, port_text = host_header.lower(), "80"
    if name.startswith("["):
        literal, bracket, rest = name[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return False
        name, port_text = literal, rest[1:] or port_text
    elif ":" in name:
        name, _, port_text = name.rpartition(":")
    if port_text != str(port):
        return False
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
