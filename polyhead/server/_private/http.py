"""The HTTP/JSON route for clients without gRPC: ``POST /v1/classify``.

The body has ClassifyRequest's fields (``{"task_id": ..., "inputs": [{"text": ...}]}``);
the answer is ClassifyResponse as JSON. It goes through the same RPC method as gRPC (auth
from the ``Authorization`` header, the same checks); a gRPC status becomes an HTTP status.
Work is done in the order of its cost: the token (from the header) before the body is read,
the body's size (Content-Length, then a capped read, within a deadline: 408 for a body that
stops arriving; at most max_streams_per_client bodies arriving at once per client, 429
past it) before it is parsed, the number of
inputs (counted in the decoded JSON) before the message is built; any body that is not a
ClassifyRequest as JSON is a 400, never a 500. Parsing runs on an executor's thread, not
the replica's event loop, which keeps serving gRPC meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

import grpc
from google.protobuf import json_format
from starlette.responses import JSONResponse

from polyhead.server._private.auth import Caller
from polyhead.server._private.errors import RequestError
from polyhead.server._private.inference import check_count
from polyhead.server._private.streams import UNKNOWN_CLIENT, StreamLimits, owner_of
from polyhead.v1 import polyhead_pb2 as pb

ROUTE = "/v1/classify"
HEALTH_ROUTE = "/v1/health"  # GET: HealthResponse as JSON (auth as the gRPC Health)
MAX_BODY_BYTES = 8 << 20  # a full request (64 inputs x 20,000 characters) fits, JSON-escaped
HTTP_STATUS = {  # as google.rpc's HTTP mapping
    grpc.StatusCode.OK: 200, grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400, grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
_NOT_A_BODY = (ValueError, TypeError, AttributeError, RecursionError, json_format.ParseError)


class BodyTooLarge(Exception):
    pass


class InvalidBody(Exception):
    pass


class BodyTimeout(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class HttpLimits:
    """What a request may cost before it reaches Classify (defaults: ServerConfig's)."""

    max_body: int = MAX_BODY_BYTES  # bytes: Content-Length, then a capped read
    max_inputs: int = 64  # counted in the decoded JSON, before ParseDict builds the message
    body_timeout_s: float = 30.0  # the whole body, not each chunk: a trickle is cut off too


class HttpContext:
    """The part of a gRPC servicer context the RPC methods use, over an HTTP request."""

    def __init__(self, headers: Any) -> None:
        auth = headers.get("authorization")
        self._metadata = [("authorization", auth)] if auth else []
        self.code: grpc.StatusCode = grpc.StatusCode.OK
        self.details = ""

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return self._metadata

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details


def error(code: grpc.StatusCode, message: str) -> JSONResponse:
    return JSONResponse({"code": code.name, "message": message},
                        status_code=HTTP_STATUS.get(code, 500))


def too_large(what: str, limit: int) -> JSONResponse:
    return JSONResponse({"code": "PAYLOAD_TOO_LARGE",
                         "message": f"{what}; the limit is {limit} bytes"}, status_code=413)


async def read_body(request: Any, limit: int, timeout_s: float) -> bytes:
    """The body, refused (BodyTooLarge) by its Content-Length or once ``limit`` bytes were
    read: a client's claim is never trusted, and nothing past the limit is held; BodyTimeout
    unless all of it arrived within ``timeout_s``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"Content-Length {int(declared)}")
    chunks, n = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                n += len(chunk)
                if n > limit:
                    raise BodyTooLarge(f"body over {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTimeout(f"body: {n} bytes arrived in {timeout_s:g} s; the whole body must "
                          f"arrive within {timeout_s:g} s") from None
    return b"".join(chunks)


def parse_body(raw: bytes, max_inputs: int) -> pb.ClassifyRequest:
    """ClassifyRequest from JSON; InvalidBody for anything else (null, 123, deep nesting),
    InvalidInput for over ``max_inputs`` inputs, before ParseDict (seconds for 500,000)."""
    try:
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise ValueError(f"a JSON object is needed, got {type(body).__name__}")
        inputs = body.get("inputs")
        if isinstance(inputs, list):
            check_count(len(inputs), max_inputs)
        return json_format.ParseDict(body, pb.ClassifyRequest())
    except _NOT_A_BODY as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else str(e)[:200]
        raise InvalidBody(f"body: not a ClassifyRequest as JSON: {reason}") from None


async def http_classify(classify: Callable[[Any, Any], Awaitable[pb.ClassifyResponse]],
                        request: Any, authorize: Callable[[Any], object] | None = None,
                        limits: HttpLimits = HttpLimits(),
                        parse_on: Executor | None = None,
                        bodies: StreamLimits | None = None) -> JSONResponse:
    """``authorize(ctx)`` raises (a RequestError) unless the header's token may classify,
    else gives the Caller; the body is parsed on ``parse_on`` (None: the loop's default
    executor); ``bodies`` caps the bodies one client (address, API key) sends at once."""
    if request.url.path.rstrip("/") != ROUTE:
        return error(grpc.StatusCode.NOT_FOUND, f"no route {request.url.path[:200]}; POST {ROUTE}")
    if request.method != "POST":
        return JSONResponse({"code": "METHOD_NOT_ALLOWED", "message": f"{ROUTE} takes POST"},
                            status_code=405, headers={"Allow": "POST"})
    ctx = HttpContext(request.headers)
    caller = None
    if authorize is not None:
        try:
            caller = authorize(ctx)
        except RequestError as e:
            return error(e.code, str(e))
    client = getattr(request, "client", None)  # (a test double may have none)
    host = client.host if client is not None else UNKNOWN_CLIENT
    owner = owner_of(caller, host) if isinstance(caller, Caller) else host
    try:
        with bodies.holding(owner) if bodies is not None else contextlib.nullcontext():
            raw = await read_body(request, limits.max_body, limits.body_timeout_s)
        message = await asyncio.get_running_loop().run_in_executor(
            parse_on, parse_body, raw, limits.max_inputs)
    except BodyTooLarge as e:
        return too_large(str(e), limits.max_body)
    except BodyTimeout as e:  # RFC 9110 15.5.9: close the connection the body was late on
        return JSONResponse({"code": "REQUEST_TIMEOUT", "message": str(e)}, status_code=408,
                            headers={"Connection": "close"})
    except InvalidBody as e:
        return error(grpc.StatusCode.INVALID_ARGUMENT, str(e))
    except RequestError as e:
        return error(e.code, str(e))
    out = await classify(message, ctx)
    if ctx.code is not grpc.StatusCode.OK:
        return error(ctx.code, ctx.details)
    return JSONResponse(json_format.MessageToDict(
        out, preserving_proto_field_name=True, always_print_fields_with_no_presence=True))


async def http_health(health: Callable[[Any, Any], Awaitable[pb.HealthResponse]],
                      request: Any) -> JSONResponse:
    """``GET /v1/health``: the answering replica's Health, through the same RPC method."""
    if request.method != "GET":
        return JSONResponse({"code": "METHOD_NOT_ALLOWED", "message": f"{HEALTH_ROUTE} takes GET"},
                            status_code=405, headers={"Allow": "GET"})
    ctx = HttpContext(request.headers)
    out = await health(pb.HealthRequest(), ctx)
    if ctx.code is not grpc.StatusCode.OK:
        return error(ctx.code, ctx.details)
    return JSONResponse(json_format.MessageToDict(
        out, preserving_proto_field_name=True, always_print_fields_with_no_presence=True))
