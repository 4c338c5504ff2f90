"""The `grpc_servicer_functions` Serve's gRPC proxy loads: the generated ones, except that a
request that does not parse (bad UTF-8, wrong wire types) reaches the replica as a
MalformedRequest, to be answered INVALID_ARGUMENT instead of grpc's INTERNAL.

Imported by Serve's proxy actor: keep it free of torch and the rest of the server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from polyhead.v1 import polyhead_pb2_grpc as pb_grpc


class MalformedRequest:
    """Stands in for a request message whose bytes did not parse."""

    def __init__(self, message: str) -> None:
        self.message = message


def add_InferenceServicer_to_server(servicer: Any, server: Any) -> None:
    pb_grpc.add_InferenceServicer_to_server(servicer, _Lenient(server))


def add_RegistryServicer_to_server(servicer: Any, server: Any) -> None:
    pb_grpc.add_RegistryServicer_to_server(servicer, _Lenient(server))


def _lenient(handler: Any) -> Any:
    parse = handler.request_deserializer
    if parse is None:
        return handler

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as e:  # DecodeError and friends: the client's fault
            return MalformedRequest(f"request does not parse: {e}")

    return handler._replace(request_deserializer=deserialize)


class _Lenient:
    """A server whose method handlers get lenient request deserializers."""

    def __init__(self, server: Any) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        for h in handlers:
            methods = getattr(h, "_method_handlers", None)
            if methods is not None:
                h._method_handlers = {k: _lenient(v) for k, v in methods.items()}
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        add: Callable[..., None] | None = getattr(self._server, "add_registered_method_handlers", None)
        if add is not None:
            add(service, {k: _lenient(v) for k, v in handlers.items()})
