"""The Admin service on a replica: ``polyhead.admin.StoreAdmin``'s operations on the admin
thread (writes one at a time, never on the event loop). After a key or tenant change this
replica re-reads its key cache at once; the others follow the store's change feed."""

from __future__ import annotations

from typing import Any

from polyhead.admin import CHANGES, AdminInputError, StoreAdmin
from polyhead.server._private.errors import InvalidInput
from polyhead.server._private.services import Parts


class AdminService:
    def __init__(self, parts: Parts) -> None:
        self.p = parts
        self.ops = StoreAdmin(parts.store.catalog)  # the gate records the audit trail

    async def call(self, rpc: str, request: Any) -> Any:
        p = self.p
        try:
            out = await p.on_admin(getattr(self.ops, rpc), request)
        except AdminInputError as e:
            raise InvalidInput(str(e)) from None
        if rpc in CHANGES:
            await p.resolver.read(p.keys.load, p.store.catalog)
        return out
