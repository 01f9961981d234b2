"""Loopback ports: finding free ones and probing whether a service answers on one."""

from __future__ import annotations

import http.client
import socket
import ssl

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = HOST, timeout: float = 0.25) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def distinct_free_ports(count: int) -> list[int]:
    """`count` different ports that are free right now."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def http_answers(port: int, path: str, context: ssl.SSLContext | None = None) -> bool:
    """Whether GET path on 127.0.0.1:port gets any HTTP response (HTTPS when given a context)."""
    connection: http.client.HTTPConnection
    if context is None:
        connection = http.client.HTTPConnection(HOST, port, timeout=1)
    else:
        connection = http.client.HTTPSConnection(HOST, port, timeout=1, context=context)
    try:
        connection.request("GET", path)
        connection.getresponse().read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
    return True
