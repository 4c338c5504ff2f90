"""Helpers for the reliability tests (issue 6; no tests here): a real Ray Serve app on
loopback that a test can restart, the replicas' processes, this Ray session's log files,
and a closed-loop load generator that records latency per request."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from polyhead.client import PolyheadClient
from polyhead.server.config import Secret, ServerConfig
from tests.test_serving import free_port, ray_session

# Distinctive, so that a grep of the logs cannot miss it (or match something else).
TOKEN = "reliability-registry-token-7f3c9a1e5b2d4068"
REPLICA_MARK = "ServeReplica:polyhead"


@dataclasses.dataclass
class App:
    """One Ray session with the Polyhead app; ``restart`` shuts Serve down and starts it again
    on the same store (and port)."""

    backbone: Path
    store: Path
    port: int
    replicas: int
    options: dict[str, Any]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, token: str | None = TOKEN, **kw: Any) -> PolyheadClient:
        return PolyheadClient(self.address, token, **kw)

    def start(self) -> None:
        from ray import serve
        from ray.serve.config import gRPCOptions

        from polyhead.server.app import APP_NAME, GRPC_SERVICERS, app_for

        serve.start(http_options={"host": "127.0.0.1", "port": free_port()},
                    grpc_options=gRPCOptions(port=self.port, grpc_servicer_functions=GRPC_SERVICERS))
        config = ServerConfig(store=str(self.store), backbone=str(self.backbone), token=Secret(TOKEN),
                              max_inputs=16, max_batch_rows=32, max_text_chars=5000,
                              seed_examples=False, **self.options)
        serve.run(app_for(config, num_replicas=self.replicas, num_cpus=2 / self.replicas),
                  name=APP_NAME, route_prefix="/")

    def restart(self) -> None:
        from ray import serve

        serve.shutdown()
        self.start()


@contextlib.contextmanager
def running_app(backbone: Path, store: Path, *, replicas: int = 1, env: dict[str, str] | None = None,
                **options: Any) -> Iterator[App]:
    """Ray (2 CPUs, no dashboard) with Serve's throughput env, as `polyhead serve` runs it
    (``env`` over it)."""
    with ray_session(env):
        app = App(backbone, store, free_port(), replicas, options)
        app.start()
        yield app


def replica_processes() -> list[psutil.Process]:
    """The live Serve replica processes of this test process's own Ray session (other Ray
    sessions on the machine are not its descendants)."""
    out = []
    for p in psutil.Process(os.getpid()).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if p.status() != psutil.STATUS_ZOMBIE and REPLICA_MARK in " ".join(p.cmdline()):
                out.append(p)
    return out


def wait_for_replicas(n: int, exclude: frozenset[int] | set[int] = frozenset(),
                      timeout: float = 120.0) -> list[int]:
    """PIDs of ``n`` replica processes none of which is in ``exclude``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [p.pid for p in replica_processes() if p.pid not in exclude]
        if len(pids) >= n:
            return pids
        time.sleep(0.2)
    raise TimeoutError(f"{n} replica processes did not appear in {timeout} s")


def session_logs() -> Path:
    """This Ray session's log folder (not /tmp/ray/session_latest: another session on the
    machine may be newer)."""
    import ray

    return Path(ray._private.worker._global_node.get_logs_dir_path())


@dataclasses.dataclass
class LoadResult:
    calls: list[tuple[float, float]]  # (start, seconds) per successful call
    errors: list[str]
    wrong: list[str]

    def buckets(self, t0: float, width_s: float) -> list[dict[str, float]]:
        """Count, p50 and p99 (ms) per ``width_s`` window from ``t0``; a window with fewer
        than 100 calls has its maximum instead ("max_ms"), which is what its p99 would be."""
        groups: dict[int, list[float]] = {}
        for start, secs in self.calls:
            groups.setdefault(int((start - t0) // width_s), []).append(secs * 1000)
        out = []
        for i in sorted(groups):
            lat = sorted(groups[i])
            tail = {"p99_ms": lat[int(len(lat) * 0.99)]} if len(lat) >= 100 else {"max_ms": lat[-1]}
            out.append({"window": i, "calls": len(lat), "rps": len(lat) / width_s,
                        "p50_ms": lat[len(lat) // 2], **tail})
        return out


def closed_loop(make_client: Callable[[], PolyheadClient],
                work: Callable[[PolyheadClient, int], str | None],
                threads: int, seconds: float | None = None,
                stop: threading.Event | None = None) -> LoadResult:
    """``threads`` clients calling ``work(client, i)`` back to back for ``seconds`` (or until
    ``stop``); ``work`` returns None when the answer was right, else what was wrong."""
    result = LoadResult([], [], [])
    stop = stop or threading.Event()
    lock = threading.Lock()

    def loop(k: int) -> None:
        try:
            with make_client() as c:
                i = k
                while not stop.is_set():
                    s = time.perf_counter()
                    try:
                        problem = work(c, i)
                    except Exception as e:
                        with lock:
                            result.errors.append(f"{type(e).__name__}: {e}"[:300])
                        continue
                    finally:
                        i += threads
                    d = time.perf_counter() - s
                    with lock:
                        result.calls.append((s, d))
                        if problem is not None:
                            result.wrong.append(problem)
        except Exception as e:  # the client itself failed (make_client, close): not lost
            with lock:
                result.errors.append(f"client {k}: {type(e).__name__}: {e}"[:300])

    pool = [threading.Thread(target=loop, args=(k,), daemon=True) for k in range(threads)]
    for t in pool:
        t.start()
    if seconds is not None:
        stop.wait(seconds)
        stop.set()
    for t in pool:
        t.join()
    return result
