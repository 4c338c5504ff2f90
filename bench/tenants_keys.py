"""What API keys cost (issue 24), printed as two tables.

1. The key check per request, with 10,000 keys in the store: the gate's ``Auth.check``
   for an API key (looked up by its key id in the replica's key cache, its sha256
   compared) against the single configured token (single-owner mode), and against a
   wrong key; plus how long the cache takes to re-read 10,000 keys after a change
   (on the store thread, once per key change, never per request).
2. Revocation -> refused on every replica: two replicas (the Serve deployment's class in
   process, the packaged backbone) sharing one store; a key is revoked through replica 1's
   Admin RPC, then both replicas are asked (Health, every 1 ms) until both refuse it.
   30 trials per backend (SQLite: the feed polls every --watch-ms; PostgreSQL: NOTIFY, a
   private server from pgserver); median and max from the revoke call's start.

    python -m bench.tenants_keys [--keys 10000] [--trials 30] [--watch-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from polyhead.server._private.auth import Auth, KeyRing
from polyhead.server.config import Secret, ServerConfig
from polyhead.store import tenancy
from polyhead.store.catalog import open_catalog
from polyhead.v1 import polyhead_pb2 as pb

OWNER = "owner-token-for-the-bench"


def _md(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def fill_keys(location: str, n: int) -> str:
    """``n`` keys of 100 tenants in one transaction; one of them (returned) to check."""
    catalog = open_catalog(location)

    def body(c: Any) -> str:
        for t in range(100):
            tenancy.create_tenant(c, f"t{t}", None, None)
        keys = [tenancy.create_key(c, f"t{i % 100}", ("classify", "publish"), None)[1] for i in range(n)]
        return keys[n // 2]

    return catalog._auth_changed(body)


def per_call_us(check: Any, metadata: list[tuple[str, str]], reps: int) -> float:
    """Median of 7 runs of ``reps`` calls, in microseconds per call."""
    runs = []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(reps):
            check(metadata)
        runs.append((time.perf_counter() - t0) / reps * 1e6)
    return statistics.median(runs)


def key_check_table(n: int, reps: int) -> None:
    folder = tempfile.mkdtemp(prefix="bench-keys-")
    key = fill_keys(folder, n)
    ring = KeyRing()
    catalog = open_catalog(folder)
    t0 = time.perf_counter()
    ring.load(catalog)
    load_ms = (time.perf_counter() - t0) * 1000
    catalog.create_key("t0", ("classify",))
    t0 = time.perf_counter()
    ring.load(catalog)
    change_ms = (time.perf_counter() - t0) * 1000
    auth = Auth(OWNER, None, ring)

    def ok(md: list[tuple[str, str]]) -> None:
        auth.check("classify", md)

    def refused(md: list[tuple[str, str]]) -> None:
        try:
            auth.check("classify", md)
        except Exception:
            return
        raise AssertionError("a wrong key passed")

    token_us = per_call_us(ok, _md(OWNER), reps)
    key_us = per_call_us(ok, _md(key), reps)
    wrong = key[:-4] + ("BBBB" if key.endswith("AAAA") else "AAAA")
    wrong_us = per_call_us(refused, _md(wrong), reps)
    print(f"\n## Key check per request ({len(ring)} keys in the store's key cache; "
          f"{reps} calls x 7, median)\n")
    print("| credential | Auth.check per call (us) | vs the token |")
    print("|---|---:|---:|")
    print(f"| configured token (single-owner) | {token_us:.2f} | 1.00x |")
    print(f"| API key (cache lookup + sha256) | {key_us:.2f} | {key_us / token_us:.2f}x |")
    print(f"| wrong API key (refused) | {wrong_us:.2f} | {wrong_us / token_us:.2f}x |")
    print(f"\nthe key cache reads all {n} keys at start in {load_ms:.1f} ms; after a key change "
          f"it reads the changed one in {change_ms:.1f} ms (store thread, not per request)")


async def _replica(config: ServerConfig) -> Any:
    from polyhead.server._private.replica import Polyhead

    cls = Polyhead.func_or_class  # the deployment's class, without Ray
    replica = cls.__new__(cls)
    await replica.__init__(config)
    return replica


class _Ctx:
    def __init__(self, key: str) -> None:
        self.md, self.code = _md(key), None

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return self.md

    def set_code(self, code: Any) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        pass


async def _refused(replica: Any, key: str) -> bool:
    ctx = _Ctx(key)
    await replica.Health(pb.HealthRequest(), ctx)
    return ctx.code is not None and ctx.code.name == "UNAUTHENTICATED"


async def revocation_trials(location: str, trials: int, watch_s: float, n: int) -> list[float]:
    fill_keys(location, n)
    config = ServerConfig(store=location, seed_examples=False, torch_threads=1, token=Secret(OWNER),
                          watch_interval_s=watch_s)
    one, two = await _replica(config), await _replica(config)
    owner = _Ctx(OWNER)
    await one.CreateTenant(pb.CreateTenantRequest(tenant="bench"), owner)
    out = []
    for _ in range(trials):
        made = await one.CreateKey(pb.CreateKeyRequest(tenant="bench", scopes=["classify"]), _Ctx(OWNER))
        while await _refused(two, made.key):  # the new key reaches replica 2 first
            await asyncio.sleep(0.001)
        t0 = time.perf_counter()
        await one.RevokeKey(pb.RevokeKeyRequest(key_id=made.info.key_id), _Ctx(OWNER))
        while not (await _refused(one, made.key) and await _refused(two, made.key)):
            await asyncio.sleep(0.001)
        out.append((time.perf_counter() - t0) * 1000)
    for r in (one, two):
        r._watcher.cancel()
        r.parts.batcher.close()
    return out


def revocation_table(trials: int, watch_s: float, n: int) -> None:
    rows = []
    folder = str(Path(tempfile.mkdtemp(prefix="bench-revoke-")) / "store")
    rows.append((f"SQLite (feed polls every {watch_s * 1000:.0f} ms)", asyncio.run(
        revocation_trials(folder, trials, watch_s, n))))
    import pgserver

    server = pgserver.get_server(Path(tempfile.mkdtemp(prefix="bench-pg-")) / "data", cleanup_mode="delete")
    try:
        rows.append(("PostgreSQL (LISTEN/NOTIFY)", asyncio.run(
            revocation_trials(server.get_uri(), trials, watch_s, n))))
    finally:
        server.cleanup()
    print(f"\n## Revocation -> refused on both replicas ({trials} trials, {n} other keys in the store, "
          "ms from the RevokeKey call)\n")
    print("| store | median (ms) | max (ms) | target |")
    print("|---|---:|---:|---|")
    for name, ms in rows:
        print(f"| {name} | {statistics.median(ms):.1f} | {max(ms):.1f} | <= 1000 |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--keys", type=int, default=10_000)
    p.add_argument("--reps", type=int, default=20_000)
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--watch-ms", type=float, default=50.0, help="the replicas' watch_interval (default 50)")
    args = p.parse_args()
    os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")  # Ray's metrics API must not start Ray
    key_check_table(args.keys, args.reps)
    revocation_table(args.trials, args.watch_ms / 1000, args.keys)


if __name__ == "__main__":
    main()
