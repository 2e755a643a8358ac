"""Is the registry still serving? Repair refuses to run under a live registry (an in-flight push loses layers)."""

from __future__ import annotations

import http.client


def registry_answers(http_addr: str, timeout: float = 1.0) -> bool:
    """Whether anything answers HTTP at the registry's `http.addr` (`:5000` means this host)."""
    host, _, port = http_addr.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    try:
        connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
        try:
            connection.request("GET", "/v2/")
            connection.getresponse()
        finally:
            connection.close()
    except (OSError, ValueError, http.client.HTTPException):
        return False
    return True


def describe_address(http_addr: str) -> str:
    return http_addr if not http_addr.startswith(":") else f"127.0.0.1{http_addr}"



