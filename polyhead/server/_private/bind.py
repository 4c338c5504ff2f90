"""Where Serve's gRPC proxy listens. Serve binds it to every interface ("[::]") and has no
option for the host; `polyhead serve --host` sets ``POLYHEAD_GRPC_HOST`` before Ray starts
and names ``setup`` as Ray's ``worker_process_setup_hook``, which runs in every Ray worker
(the proxy's too) before Serve starts its server there, and rewrites that one address."""

from __future__ import annotations

import os
from typing import Any

HOST_ENV = "POLYHEAD_GRPC_HOST"
EVERY_INTERFACE = "[::]:"


def address_for(address: str, host: str | None) -> str:
    """``[::]:PORT`` on ``host`` (an IPv6 literal bracketed); any other address as it is."""
    if not host or not address.startswith(EVERY_INTERFACE):
        return address
    port = address[len(EVERY_INTERFACE):]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def setup() -> None:
    host = os.environ.get(HOST_ENV)
    if not host:
        return
    from ray.serve._private import default_impl

    add = default_impl.add_grpc_address
    if getattr(add, "polyhead_host", None) == host:
        return

    def add_on_host(server: Any, address: str) -> None:
        add(server, address_for(address, host))

    add_on_host.polyhead_host = host  # type: ignore[attr-defined]
    default_impl.add_grpc_address = add_on_host  # type: ignore[assignment]
