"""The HTTP/JSON route for clients without gRPC: ``POST /v1/classify``.

The body has ClassifyRequest's fields (``{"task_id": ..., "inputs": [{"text": ...}]}``);
the answer is ClassifyResponse as JSON. It goes through the same RPC method as gRPC (auth
from the ``Authorization`` header, the same checks); a gRPC status becomes an HTTP status.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import json_format
from polyhead.v1 import polyhead_pb2 as pb
from starlette.responses import JSONResponse

ROUTE = "/v1/classify"
HEALTH_ROUTE = "/v1/health"  # GET: HealthResponse as JSON (auth as the gRPC Health)
HTTP_STATUS = {  # as google.rpc's HTTP mapping
    grpc.StatusCode.OK: 200, grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400, grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


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


async def http_classify(classify: Callable[[Any, Any], Awaitable[pb.ClassifyResponse]],
                        request: Any) -> JSONResponse:
    if request.url.path.rstrip("/") != ROUTE:
        return error(grpc.StatusCode.NOT_FOUND, f"no route {request.url.path}; POST {ROUTE}")
    if request.method != "POST":
        return JSONResponse({"code": "METHOD_NOT_ALLOWED", "message": f"{ROUTE} takes POST"},
                            status_code=405, headers={"Allow": "POST"})
    try:
        body = json.loads(await request.body())
        message = json_format.ParseDict(body, pb.ClassifyRequest())
    except (ValueError, json_format.ParseError) as e:
        return error(grpc.StatusCode.INVALID_ARGUMENT, f"body: not a ClassifyRequest as JSON: {e}")
    ctx = HttpContext(request.headers)
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
