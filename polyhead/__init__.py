"""Polyhead: many task adapters served on one frozen encoder.

``from polyhead import Client, AsyncClient`` gives the gRPC clients (grpcio and protobuf
only); the server, store, engine and trainer are subpackages that need the ``server`` or
``train`` extra. Names load on first use: ``import polyhead`` imports nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from polyhead._lazy import lazy_exports

if TYPE_CHECKING:
    from polyhead.client import AsyncClient, Client, PolyheadClient, PolyheadError

_WHERE = {"Client": ".client.sync", "PolyheadClient": ".client.sync",
          "AsyncClient": ".client.aio", "PolyheadError": ".client._common"}
__all__ = ["AsyncClient", "Client", "PolyheadClient", "PolyheadError"]
__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
