"""Two Serve replicas on one PostgreSQL store (a real Ray Serve app, real gRPC, real
PostgreSQL): an upload taken by one replica is loaded by the other without any request
asking for it (the change is pushed to its watcher), and after PostgreSQL restarts under
the running app, both replicas reconnect and load a version published meanwhile.
Run under the shared Ray lock (`flock /tmp/polyhead-ray.lock ...`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from polyhead.client import PolyheadClient, PolyheadError
from polyhead.store import Store
from tests import test_store_support as support
from tests.reliability_support import App, running_app
from tests.test_serving import artifact, both_replicas
from tests.test_store_pg import _pg_ctl

pytestmark = pytest.mark.integration
DEADLINE_S = 60.0  # only to stop waiting on a broken build; never a timing assertion


@pytest.fixture(scope="module")
def pg_app(tiny_bert_dir: Path, pg_server: Any,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[App, str]]:
    url = support.new_database(pg_server)
    with pytest.MonkeyPatch.context() as mp:  # the replicas' byte cache (Ray workers inherit it)
        mp.setenv("POLYHEAD_STORE_CACHE", str(tmp_path_factory.mktemp("replica-cache")))
        with running_app(tiny_bert_dir, url, replicas=2) as app:  # type: ignore[arg-type]
            yield app, url


def resident_on_both(client: PolyheadClient, task: str, version: str) -> set[str]:
    """Ask Health (4 threads, the router spreads them) until both replicas hold ``version``
    of ``task`` loaded; the replicas that do."""
    t0, holders, lock = time.monotonic(), set(), threading.Lock()

    def poll() -> None:
        while time.monotonic() - t0 < DEADLINE_S and len(holders) < 2:
            h = client.health()
            if any(r["task_id"] == task and r["version"] == version for r in h.get("resident", [])):
                with lock:
                    holders.add(h["replica"])

    threads = [threading.Thread(target=poll) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return holders


def test_each_replica_loads_the_others_uploads(pg_app: tuple[App, str], tiny_bert) -> None:
    app, _ = pg_app
    spec = tiny_bert.spec
    with app.client() as c:
        first = c.upload(artifact(spec, "pushed", seed=1)[0])
        assert len(both_replicas(c, "pushed", lambda v: v == first["version"], DEADLINE_S)) == 2
        for seed in range(2, 6):  # each upload lands on one replica; the other is told
            v = c.upload(artifact(spec, "pushed", seed=seed)[0])
            assert len(resident_on_both(c, "pushed", v["version"])) == 2, seed
            assert c.classify("pushed", "rain")[0]["version"] == v["version"]


def test_replicas_reconnect_after_a_database_restart(pg_app: tuple[App, str], pg_server: Any,
                                                     tiny_bert) -> None:
    app, url = pg_app
    spec = tiny_bert.spec
    with app.client() as c, app.client(retries=0) as once:
        v1 = c.upload(artifact(spec, "restart", seed=11)[0])
        assert len(both_replicas(c, "restart", lambda v: v == v1["version"], DEADLINE_S)) == 2
        _pg_ctl(pg_server, "stop")
        try:
            # the version both replicas hold keeps answering (nothing can be published now) ...
            assert once.classify("restart", "rain")[0]["version"] == v1["version"]
            with pytest.raises(PolyheadError) as e:  # ... one that needs the store: a clear status
                once.classify("never-published", "rain")
            assert e.value.code == grpc.StatusCode.UNAVAILABLE and "store" in e.value.details
        finally:
            _pg_ctl(pg_server, "start")
        # Published straight into the database while the replicas' listeners are reconnecting.
        v2 = Store(url, spec).publish(artifact(spec, "restart", seed=12)[0])
        assert len(resident_on_both(c, "restart", v2.version)) == 2
        assert c.classify("restart", "rain")[0]["version"] == v2.version
