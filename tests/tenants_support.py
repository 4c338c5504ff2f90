"""A real server for the tenants tests, without Ray: the Serve deployment's class run in
process (tests.test_replica_memory.in_process_replica), behind a real gRPC server on
loopback (grpc.aio, the very servicer functions Serve's proxy loads, proxy-side token
check included) and a real HTTP server (uvicorn) for /v1/classify and /v1/health."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from polyhead.server._private import decoders
from polyhead.server.app import GRPC_SERVICERS
from polyhead.server.config import ServerConfig
from tests.test_replica_memory import in_process_replica
from tests.test_serving import free_port


class LogRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        fmt = logging.Formatter()
        return "\n".join(fmt.format(r) for r in self.records)


@contextlib.contextmanager
def captured_logs() -> Any:
    """Every record of the root logger and Serve's (which does not propagate)."""
    handler = LogRecords()
    loggers = [logging.getLogger(), logging.getLogger("ray.serve")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        yield handler
    finally:
        for lg in loggers:
            lg.removeHandler(handler)


@dataclasses.dataclass
class Served:
    replica: Any
    grpc_address: str
    http_port: int
    channel: grpc.aio.Channel


async def _http_app(replica: Any) -> Any:
    from starlette.requests import Request

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        response = await replica(Request(scope, receive))
        await response(scope, receive, send)

    return app


@contextlib.asynccontextmanager
async def serving(config: ServerConfig) -> AsyncIterator[Served]:
    import uvicorn

    replica = await in_process_replica(config)
    server = grpc.aio.server()
    for name in GRPC_SERVICERS:  # every service the app registers
        getattr(decoders, name.rsplit(".", 1)[1])(replica, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    http_port = free_port()
    web = uvicorn.Server(uvicorn.Config(await _http_app(replica), host="127.0.0.1", port=http_port,
                                       log_level="warning", lifespan="off"))
    web_task = asyncio.get_running_loop().create_task(web.serve())
    while not web.started:
        await asyncio.sleep(0.01)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Served(replica, f"127.0.0.1:{port}", http_port, channel)
    finally:
        await channel.close()
        web.should_exit = True
        await web_task
        await server.stop(None)
        replica._watcher.cancel()
        replica.parts.batcher.close()
