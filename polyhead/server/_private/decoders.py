"""The `grpc_servicer_functions` Serve's gRPC proxy loads: the generated ones, gated so that
an unauthenticated call costs neither the proxy nor a replica its message.

When `polyhead serve` told the proxy the tokens (``POLYHEAD_PROXY_AUTH``), the proxy refuses
a call whose metadata lacks the right one when gRPC looks up its handler, before a byte of
the message is read (the replica's gate checks again). The proxy's deserializer only
measures a message: one over its method's limit becomes a
MalformedRequest (RESOURCE_EXHAUSTED) and its bytes are dropped there; any other travels as
``Unparsed`` bytes. The replica parses them (``materialize``) after the token check, and a
message that does not parse (bad UTF-8, wrong wire types) is answered INVALID_ARGUMENT
instead of grpc's INTERNAL.

Imported by Serve's proxy actor: keep it free of torch and the rest of the server.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import grpc

from polyhead.server._private.tokens import refusal
from polyhead.v1 import polyhead_pb2_grpc as pb_grpc

MB = 1 << 20
MESSAGE_ENV = "POLYHEAD_MAX_MESSAGE_BYTES"  # Classify, ClassifyStream messages and the rest
UPLOAD_ENV = "POLYHEAD_MAX_UPLOAD_BYTES"  # Upload, ImportPeft
# A Classify message: 64 inputs x 20,000 characters x 4 bytes of UTF-8 = 5.1 MB, and framing.
DEFAULT_MESSAGE_BYTES = 6 * MB
DEFAULT_UPLOAD_BYTES = 257 * MB  # the store's artifact cap (256 MB) + the message's own fields
UPLOADS = frozenset({"Upload", "ImportPeft"})
# Set by `polyhead serve` for Ray's workers: "1" says the two token variables below are the
# whole token configuration (unset: not configured); without it the proxy gates nothing.
PROXY_AUTH_ENV = "POLYHEAD_PROXY_AUTH"
PROXY_REGISTRY_ENV = "POLYHEAD_PROXY_REGISTRY_TOKEN"
PROXY_INFERENCE_ENV = "POLYHEAD_PROXY_INFERENCE_TOKEN"


class MalformedRequest:
    """Stands in for a request message that is refused before it is parsed."""

    def __init__(self, message: str, code: str = "INVALID_ARGUMENT") -> None:
        self.message, self.code = message, code


class Unparsed:
    """A request message's bytes, parsed on the replica once the token was checked."""

    __slots__ = ("data", "message_type")

    def __init__(self, data: bytes, message_type: Any) -> None:
        self.data, self.message_type = data, message_type

    def parse(self) -> Any:
        return parsed(self.message_type.FromString, self.data)


def parsed(parse: Callable[[bytes], Any], data: bytes) -> Any:
    """The message ``parse`` makes of ``data``, or a MalformedRequest saying why it cannot."""
    try:
        return parse(data)
    except Exception as e:  # DecodeError and friends: the client's fault
        return MalformedRequest(f"request does not parse: {str(e)[:200]}")


def materialize(request: Any) -> Any:
    """The message itself (or a MalformedRequest) for whatever the deserializer passed on."""
    return request.parse() if isinstance(request, Unparsed) else request


def limit_for(method: str) -> int:
    """The largest message ``method`` ("/polyhead.v1.Registry/Upload" or "Upload") takes."""
    name = method.rsplit("/", 1)[-1]
    env, default = (UPLOAD_ENV, DEFAULT_UPLOAD_BYTES) if name in UPLOADS else (
        MESSAGE_ENV, DEFAULT_MESSAGE_BYTES)
    return int(os.environ.get(env) or default)


def add_InferenceServicer_to_server(servicer: Any, server: Any) -> None:
    pb_grpc.add_InferenceServicer_to_server(servicer, _Lenient(server, "inference"))


def add_RegistryServicer_to_server(servicer: Any, server: Any) -> None:
    pb_grpc.add_RegistryServicer_to_server(servicer, _Lenient(server, "registry"))


def add_TrainingServicer_to_server(servicer: Any, server: Any) -> None:
    pb_grpc.add_TrainingServicer_to_server(servicer, _Lenient(server, "registry"))  # jobs publish

def add_AdminServicer_to_server(servicer: Any, server: Any) -> None:
    pb_grpc.add_AdminServicer_to_server(servicer, _Lenient(server, "admin"))


def proxy_tokens() -> tuple[str | None, str | None] | None:
    """(registry, inference) tokens the proxy checks, or None when it was not told them."""
    if os.environ.get(PROXY_AUTH_ENV) != "1":
        return None
    return os.environ.get(PROXY_REGISTRY_ENV) or None, os.environ.get(PROXY_INFERENCE_ENV) or None


def _refused(code: str, message: str) -> grpc.RpcMethodHandler:
    """A handler that answers ``code`` without reading the request (a streaming handler
    works for any call: it reads messages only when it iterates them)."""
    status = grpc.StatusCode[code]

    async def refuse(requests: Any, context: Any) -> Any:
        await context.abort(status, message)
        yield  # pragma: no cover  (abort raises)

    return grpc.stream_stream_rpc_method_handler(refuse)


class _Gated(grpc.GenericRpcHandler):
    """A service's handlers, looked up only for calls that carry the token its scope needs.
    Serve replaces ``_method_handlers`` with its own (which forward to the replicas)."""

    def __init__(self, inner: Any, scope: str, tokens: tuple[str | None, str | None]) -> None:
        self._name = inner.service_name()
        self._method_handlers: dict[str, Any] = inner._method_handlers
        self._scope, self._tokens = scope, tokens

    def service_name(self) -> str:
        return self._name

    def service(self, handler_call_details: Any) -> Any:
        handler = self._method_handlers.get(handler_call_details.method)
        if handler is None:
            return None
        refused = refusal(self._scope, handler_call_details.invocation_metadata or (),
                          *self._tokens)
        return handler if refused is None else _refused(*refused)


def _lenient(method: str, handler: Any) -> Any:
    parse = handler.request_deserializer
    if parse is None:
        return handler
    message_type, limit, name = getattr(parse, "__self__", None), limit_for(method), method.rsplit("/", 1)[-1]

    def deserialize(data: bytes) -> Any:
        if len(data) > limit:
            return MalformedRequest(f"{name}: a message of {len(data)} bytes; the limit is "
                                    f"{limit}", code="RESOURCE_EXHAUSTED")
        if message_type is None:  # not a generated FromString: parse here, leniently
            return parsed(parse, data)
        return Unparsed(data, message_type)

    return handler._replace(request_deserializer=deserialize)


class _Lenient:
    """A server whose method handlers get measuring, lazy request deserializers, behind the
    token check when the proxy knows the tokens."""

    def __init__(self, server: Any, scope: str) -> None:
        self._server, self._scope, self._tokens = server, scope, proxy_tokens()

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        for h in handlers:
            methods = getattr(h, "_method_handlers", None)
            if methods is not None:
                h._method_handlers = {k: _lenient(k, v) for k, v in methods.items()}
        if self._tokens is not None:
            handlers = tuple(_Gated(h, self._scope, self._tokens) for h in handlers)
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        """Registered handlers skip the generic lookup, and with it the token check: when
        the proxy gates, the generic handlers above serve every method instead."""
        add: Callable[..., None] | None = getattr(self._server, "add_registered_method_handlers", None)
        if add is not None and self._tokens is None:
            add(service, {k: _lenient(k, v) for k, v in handlers.items()})
