"""``authsvc serve --workers N``: each worker listens on a socket of its own.

uvicorn's workers share the one socket their parent bound: a new connection goes to
whichever worker wakes first, and that one accepts every connection waiting, so a burst of
clients that connect together (a load balancer's pool, a benchmark's 32 connections) often
lands on a single worker while the others idle (docs/deployment.md, "Capacity"). Here every
worker binds its own socket to the same address with ``SO_REUSEPORT`` (Linux): the kernel
spreads new connections over the workers' sockets by their address hash.

uvicorn's supervisor hands each worker the list of sockets it was given, pickled; a
``ReusePortAddress`` in that list unpickles, in the worker, as a socket the worker bound
itself. The parent binds one too but never listens on it: it holds the address (so another
program cannot take it between restarts of a worker) and gets no connections.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

logger = logging.getLogger("uvicorn.error")


def reuse_port_available() -> bool:
    return hasattr(socket, "SO_REUSEPORT")


def bind_reuse_port(family: int, host: str, port: int) -> socket.socket:
    """A socket bound to ``(host, port)`` among others bound there with ``SO_REUSEPORT``."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


class ReusePortAddress:
    """Where to listen; pickled into a worker, it becomes that worker's own bound socket."""

    def __init__(self, family: int, host: str, port: int) -> None:
        self.family, self.host, self.port = family, host, port

    def __reduce__(self) -> tuple[Any, tuple[int, str, int]]:
        return bind_reuse_port, (self.family, self.host, self.port)


def run_workers(config: uvicorn.Config) -> None:
    """uvicorn's multi-process supervisor (restarts, signals, health checks), with a
    listening socket per worker."""
    host, port = config.host, config.port
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    held = bind_reuse_port(family, host, port)
    scheme = "https" if config.is_ssl else "http"
    shown = f"[{host}]" if ":" in host else host
    logger.info(
        "Uvicorn running on %s://%s:%d (Press CTRL+C to quit); each of %d workers listens on"
        " its own socket (SO_REUSEPORT)",
        scheme,
        shown,
        held.getsockname()[1],
        config.workers,
    )
    try:
        Multiprocess(config, sockets=[ReusePortAddress(family, host, port)]).run()  # type: ignore[list-item]
    finally:
        held.close()
