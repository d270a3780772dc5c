"""Which peers are trusted proxies (``AUTHSVC_TRUSTED_PROXIES``), and what they tell us."""

from __future__ import annotations

import ipaddress

from starlette.types import Scope


def is_trusted_proxy(address: str, proxies: list[str]) -> bool:
    """Whether ``address`` is in one of ``proxies`` (addresses or networks)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for entry in proxies:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def came_over_https(scope: Scope, trusted_proxies: list[str]) -> bool:
    """Whether the client's request reached us over HTTPS.

    Either this server terminated TLS itself, or the peer is a trusted proxy whose
    ``X-Forwarded-Proto`` says ``https``. Only the rightmost value counts: it is the one
    the trusted peer set; anything to its left came from further away, possibly from the
    client itself. From any other peer the header means nothing.
    """
    if scope.get("scheme") == "https":
        return True
    client = scope.get("client")
    if not client or not trusted_proxies or not is_trusted_proxy(client[0], trusted_proxies):
        return False
    values = [
        item.strip()
        for name, value in scope["headers"]
        if name == b"x-forwarded-proto"
        for item in value.decode("latin-1").split(",")
    ]
    return bool(values) and values[-1].lower() == "https"
