"""Python clients for a Polyhead server's gRPC services: ``Client`` (blocking) and
``AsyncClient`` (asyncio, on grpc.aio), with one retry policy and one streaming logic
(``_common``) and the CLI's token discovery (``tokens``). Needs only grpcio and protobuf.

    with Client("localhost:9000") as client:    # token: $POLYHEAD_TOKEN, else the saved one
        rows = client.classify("sentiment", ["a fine film", "a dull one"])

Names load on first use, so ``polyhead.client.tokens`` stays free of gRPC.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from polyhead._lazy import lazy_exports

if TYPE_CHECKING:
    from polyhead.client._common import (
        MAX_MESSAGE,
        READ_RETRY_CODES,
        RETRY_CODES,
        PolyheadError,
        RetryPolicy,
        TextInput,
        as_dict,
        describe_version,
        read_ca,
        rows_of,
        to_inputs,
    )
    from polyhead.client.aio import AsyncClient
    from polyhead.client.sync import Client, PolyheadClient
    from polyhead.client.tokens import find_token, saved_token, token_file

_WHERE = {
    "Client": ".sync", "PolyheadClient": ".sync", "AsyncClient": ".aio",
    **dict.fromkeys(["MAX_MESSAGE", "READ_RETRY_CODES", "RETRY_CODES", "PolyheadError",
                     "RetryPolicy", "TextInput", "as_dict", "describe_version", "read_ca",
                     "rows_of", "to_inputs"], "._common"),
    **dict.fromkeys(["find_token", "saved_token", "token_file"], ".tokens"),
}
__all__ = ["MAX_MESSAGE", "READ_RETRY_CODES", "RETRY_CODES", "AsyncClient", "Client", "PolyheadClient",
           "PolyheadError", "RetryPolicy", "TextInput", "as_dict", "describe_version", "find_token",
           "read_ca", "rows_of", "saved_token", "to_inputs", "token_file"]
__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
