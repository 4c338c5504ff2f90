"""A real two-node Ray cluster on this machine, deployed with `serve deploy`, under faults.

    flock /tmp/polyhead-ray.lock python -m bench.cluster --runs 3 --clients 4

Each run: `ray start --head` and a second `ray start --address` node (each with its own
ports, one replica's CPUs apiece), `serve deploy` of deploy/serve_config.yaml (the shipped
file with a fresh store, free ports and two replicas, at most one per node), then:
- deploy -> first answer: from `serve deploy` until Classify on the example task answers;
- under load (``--clients`` threads of the retrying PolyheadClient, Classify in a loop),
  the worker node's raylet is SIGKILLed, and a new worker node joins (as KubeRay restarts
  the pod); half the clients first connect through the worker node (their answers come
  from its replica), half through the head. Failed attempts: calls that failed and were
  retried; moved: clients of the killed node answered by another replica afterwards;
  lost: calls that raised after the client's retries;
- replica back: kill -> two replicas (on two nodes) answering again.
Prints one row per run and the medians. The cluster's processes are found by a marker in
their environment and stopped, however the run ends.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml

from polyhead.client import PolyheadClient, PolyheadError

ROOT = Path(__file__).resolve().parents[1]
SERVE_CONFIG = ROOT / "deploy" / "serve_config.yaml"
MARKER = "POLYHEAD_LOCAL_CLUSTER"  # env var set on every process of one LocalCluster
BIN = Path(sys.executable).parent  # `ray` and `serve` next to this Python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    name: str
    node_manager_port: int
    log: Path


@dataclass
class LocalCluster:
    """Ray nodes started with `ray start` in subprocesses, all on 127.0.0.1.

    ``env`` is the environment of every `ray` and `serve` command (and so of every Ray
    process): RAY_ADDRESS is set only there, never in this process, so an in-process
    ``ray.init()`` elsewhere is not affected. ``stop()`` ends exactly this cluster's
    processes (by the marker in their environment), never another Ray on the machine.
    """

    work: Path
    env: dict[str, str]
    cpus_per_node: int = 1
    marker: str = field(default_factory=lambda: uuid.uuid4().hex)
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Ray's unix sockets live under the temp dir: keep its path short.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="phr-", dir="/tmp"))
        # Every port handed to any node of this cluster (all on 127.0.0.1), worker ranges
        # included: a port free now may be a worker's later, so none is chosen twice.
        self._taken: set[int] = set()
        self.gcs_port, self.dashboard_port = self.port(), self.port()
        self.env = {**self.env, MARKER: self.marker,
                    "RAY_ADDRESS": f"127.0.0.1:{self.gcs_port}"}

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def port(self) -> int:
        """A free port no component of this cluster has been given (for what runs on it, such
        as Serve's proxies, too: a port inside a node's worker range may be a worker's later)."""
        while (port := free_port()) in self._taken:
            pass
        self._taken.add(port)
        return port

    def write_serve_config(self, path: Path, store: Path) -> int:
        """Write deploy/serve_config.yaml to ``path`` with ``store`` and Serve's gRPC and
        HTTP ports chosen by ``port()``; returns the gRPC port."""
        grpc_port = self.port()
        path.write_text(yaml.safe_dump(serve_config(store, grpc_port, self.port())))
        return grpc_port

    def _ports(self) -> tuple[int, list[str]]:
        """Free ports for one node's components; its worker port range (64 ports from a free
        one) overlaps no port of the cluster's, and none is chosen inside it later."""
        while True:
            lo = free_port()
            hi = min(lo + 64, 65535)
            if self._taken.isdisjoint(range(lo, hi + 1)):
                break
        self._taken |= set(range(lo, hi + 1))
        pick = self.port
        nm = pick()
        args = [f"--node-manager-port={nm}", f"--object-manager-port={pick()}",
                f"--dashboard-agent-listen-port={pick()}", f"--dashboard-agent-grpc-port={pick()}",
                f"--metrics-export-port={pick()}", f"--runtime-env-agent-port={pick()}",
                f"--min-worker-port={lo}", f"--max-worker-port={hi}"]
        return nm, args

    def start_head(self, resources: dict[str, float] | None = None) -> Node:
        nm, ports = self._ports()
        args = ["--head", f"--port={self.gcs_port}", f"--temp-dir={self.temp_dir}",
                "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={self.port()}", *ports]
        return self._start("head", nm, args, resources)

    def add_node(self, name: str, resources: dict[str, float] | None = None) -> Node:
        nm, ports = self._ports()
        return self._start(name, nm, [f"--address=127.0.0.1:{self.gcs_port}", *ports], resources)

    def _start(self, name: str, nm: int, args: list[str], resources: dict[str, float] | None) -> Node:
        log = self.work / f"ray-start-{name}-{len(self.nodes)}.log"
        args += ["--node-ip-address=127.0.0.1", f"--num-cpus={self.cpus_per_node}", "--num-gpus=0",
                 f"--object-store-memory={100 << 20}", "--disable-usage-stats"]
        if resources:
            args.append(f"--resources={json.dumps(resources)}")
        node = Node(name, nm, log)
        self.nodes.append(node)  # before it runs, so stop() looks for it even if it fails
        self.run([str(BIN / "ray"), "start", *args], log, timeout=180)
        return node

    def run(self, cmd: list[str], log: Path, timeout: float) -> None:
        with log.open("a") as f:
            proc = subprocess.run(cmd, env=self.env, stdout=f, stderr=subprocess.STDOUT,
                                  timeout=timeout, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:3])} failed ({proc.returncode}); see {log}:\n"
                               + log.read_text()[-3000:])

    def serve_deploy(self, config: Path) -> None:
        self.run([str(BIN / "serve"), "deploy", str(config), "--address", self.dashboard],
                 self.work / "serve-deploy.log", timeout=120)

    def kill_raylet(self, node: Node) -> int:
        """SIGKILL the node's raylet (its workers, replica and proxy die with it)."""
        for proc in self.processes():
            with contextlib.suppress(Exception):
                cmd = proc.cmdline()
                if "raylet" in proc.name() and f"--node_manager_port={node.node_manager_port}" in cmd:
                    proc.send_signal(signal.SIGKILL)
                    return int(proc.pid)
        raise RuntimeError(f"no raylet found for node {node.name}")

    def ray_list(self, what: str) -> list[dict[str, Any]]:
        """`ray list WHAT` (Ray's state API) on this cluster, as JSON."""
        out = subprocess.run([str(BIN / "ray"), "list", what, "--format", "json", "--limit", "1000"],
                             env=self.env, capture_output=True, text=True, timeout=120, check=True)
        return list(json.loads(out.stdout))

    def replica_nodes(self, app: str = "polyhead", deployment: str = "Polyhead") -> dict[str, str]:
        """Live Serve replicas of the deployment: replica id -> the node it runs on."""
        prefix = f"SERVE_REPLICA::{app}#{deployment}#"
        return {a["name"][len(prefix):]: a["node_id"] for a in self.ray_list("actors")
                if a["state"] == "ALIVE" and a.get("name", "").startswith(prefix)}

    def head_node_id(self) -> str:
        return next(n["node_id"] for n in self.ray_list("nodes") if n.get("is_head_node"))

    def processes(self) -> list[Any]:
        """This cluster's live processes: those carrying its marker in their environment."""
        import psutil

        mine = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if proc.environ().get(MARKER) == self.marker:
                    mine.append(proc)
        return mine

    def stop(self) -> None:
        """Stop this cluster's processes (SIGTERM, then SIGKILL what is left) and its files."""
        import psutil

        procs = self.processes()
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.terminate()
        _, alive = psutil.wait_procs(procs, timeout=10)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(alive, timeout=10)
        subprocess.run(["rm", "-rf", str(self.temp_dir)], check=False)


@contextlib.contextmanager
def local_cluster(work: Path, env: dict[str, str], cpus_per_node: int = 1) -> Iterator[LocalCluster]:
    cluster = LocalCluster(work, env, cpus_per_node)
    try:
        yield cluster
    finally:
        cluster.stop()


def cluster_env(token: str) -> dict[str, str]:
    """The environment of the Ray processes: this one, Serve's throughput settings, the
    Registry token, Ray's token auth with a token of this cluster's own (as the RayService's
    authOptions does; not ~/.ray/auth_token), and fast failure detection (a dead raylet is
    noticed in ~3 s, not ~30)."""
    from polyhead.server.app import SERVE_ENV

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(SERVE_ENV)
    env.update(POLYHEAD_TOKEN=token, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=uuid.uuid4().hex,
               RAY_health_check_period_ms="1000", RAY_health_check_timeout_ms="1000",
               RAY_health_check_failure_threshold="3")
    return env


def serve_config(store: Path, grpc_port: int, http_port: int, *, replicas: int = 2,
                 backbone: str | None = None, source: Path = SERVE_CONFIG) -> dict[str, Any]:
    """deploy/serve_config.yaml with only what a test machine must change: the store, free
    ports, and ``replicas`` replicas, at most one per node."""
    config = yaml.safe_load(source.read_text())
    config["grpc_options"]["port"] = grpc_port
    config["http_options"]["port"] = http_port
    app = config["applications"][0]
    app["args"]["store"] = str(store)
    if backbone is not None:
        app["args"]["backbone"] = backbone
    dep = app["deployments"][0]
    dep["num_replicas"] = replicas
    dep["max_replicas_per_node"] = 1
    dep["ray_actor_options"]["num_cpus"] = 1
    return config


def wait_for(what: str, check: Callable[[], Any], deadline_s: float, every_s: float = 0.2) -> Any:
    """Call ``check`` until it returns a truthy value; a generous deadline only stops waiting."""
    end = time.monotonic() + deadline_s
    last: BaseException | None = None
    while time.monotonic() < end:
        try:
            value = check()
            if value:
                return value
        except (PolyheadError, OSError) as e:
            last = e
        time.sleep(every_s)
    raise TimeoutError(f"{what}: not after {deadline_s:.0f} s (last error: {last})")


def replicas_answering(address: str, task: str, want: int, tries: int = 40) -> set[str]:
    """Distinct replicas that answered Classify on ``task`` in up to ``tries`` calls, each on
    a new connection. A connection pins to one node's proxy (they share the port, as pods
    share a Service), and a proxy prefers the replica on its own node: new connections are
    how clients reach every node."""
    seen = set()
    for _ in range(tries):
        with PolyheadClient(address, retries=0, timeout_s=30.0) as client:
            seen.add(client.classify_raw(task, "good").replica)
        if len(seen) >= want:
            break
    return seen


class CountingClient(PolyheadClient):
    """A PolyheadClient that counts the Classify attempts that failed (each then retried,
    or raised once the retries ran out)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.failed_attempts = 0
        stub = self._stubs["inference"]
        attempt = stub.Classify

        def counted(request: Any, **call_kw: Any) -> Any:
            try:
                return attempt(request, **call_kw)
            except grpc.RpcError:
                self.failed_attempts += 1
                raise

        stub.Classify = counted


@dataclass
class Load:
    """``n`` threads calling Classify in a loop with retrying clients; counts what was lost.

    ``spread_over``: replica ids; thread i reconnects until its answers come from replica
    ``i % len``, so some load enters through every node (a proxy prefers its own node's
    replica, so that replica tells which node a connection landed on). ``served[i]``: the
    replicas that answered thread i, in order (repeats collapsed)."""

    address: str
    task: str
    n: int
    spread_over: Sequence[str] = ()
    ok: int = 0
    failed_attempts: int = 0
    lost: list[str] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.served: list[list[str]] = [[] for _ in range(self.n)]
        self.threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(self.n)]
        self._lock = threading.Lock()
        self.pinned = threading.Barrier(self.n + 1)

    def _client(self, i: int) -> CountingClient:
        for _ in range(100):
            client = CountingClient(self.address, retries=10, max_backoff_s=2.0, timeout_s=60.0)
            want = self.spread_over[i % len(self.spread_over)] if self.spread_over else None
            if want is None or client.classify_raw(self.task, "a good film").replica == want:
                return client
            client.close()
        raise RuntimeError(f"no connection reached replica {want}")

    def _loop(self, i: int) -> None:
        try:
            client = self._client(i)
        except BaseException:
            self.pinned.abort()
            raise
        with client:
            self.pinned.wait(timeout=300)
            while not self.stop_event.is_set():
                try:
                    res = client.classify_raw(self.task, "a good film")
                except PolyheadError as e:
                    with self._lock:
                        self.lost.append(str(e))
                    continue
                with self._lock:
                    self.ok += 1
                    if not self.served[i] or self.served[i][-1] != res.replica:
                        self.served[i].append(res.replica)
            with self._lock:
                self.failed_attempts += client.failed_attempts

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        self.pinned.wait(timeout=300)  # every thread connected where it should be
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=120)


def one_run(work: Path, clients: int, task: str = "sentiment") -> dict[str, float]:
    token = uuid.uuid4().hex
    cfg = work / "serve_config.yaml"
    with local_cluster(work, cluster_env(token)) as cluster:
        address = f"127.0.0.1:{cluster.write_serve_config(cfg, work / 'store')}"
        cluster.start_head()
        worker = cluster.add_node("worker")
        client = PolyheadClient(address, token, retries=10, timeout_s=60.0)
        t0 = time.perf_counter()
        cluster.serve_deploy(cfg)
        wait_for("first answer", lambda: client.classify(task, "good"), 600)
        deploy_s = time.perf_counter() - t0
        wait_for("two replicas", lambda: len(replicas_answering(address, task, 2)) == 2, 300)
        head = cluster.head_node_id()
        nodes = wait_for("two replica actors", lambda: len(n := cluster.replica_nodes()) == 2 and n, 120)
        (on_worker,) = [r for r, node in nodes.items() if node != head]
        (on_head,) = [r for r, node in nodes.items() if node == head]
        with Load(address, task, clients, spread_over=[on_worker, on_head]) as load:
            time.sleep(3.0)
            t_kill = time.perf_counter()
            cluster.kill_raylet(worker)
            cluster.add_node("worker")
            wait_for("replica back", lambda: len(replicas_answering(address, task, 2)) == 2, 600)
            back_s = time.perf_counter() - t_kill
            time.sleep(2.0)
        client.close()
        moved = sum(1 for s in load.served if s[0] == on_worker and len(s) > 1)
        return {"deploy_s": deploy_s, "back_s": back_s, "lost": len(load.lost), "ok": load.ok,
                "failed_attempts": load.failed_attempts, "moved": moved,
                "on_worker": sum(1 for s in load.served if s[0] == on_worker)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clients", type=int, default=4, help="load threads (retrying clients)")
    args = ap.parse_args(argv)
    rows = []
    print("| run | deploy -> first answer s | requests ok under load | failed attempts (retried) "
          "| clients on the killed node -> moved | lost | kill -> replica back s | load avg |\n"
          "|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    for i in range(args.runs):
        work = Path(tempfile.mkdtemp(prefix="polyhead-cluster-"))
        r = one_run(work, args.clients)
        rows.append(r)
        print(f"| {i + 1} | {r['deploy_s']:.1f} | {r['ok']} | {r['failed_attempts']} "
              f"| {r['on_worker']} -> {r['moved']} | {r['lost']} | {r['back_s']:.1f} "
              f"| {os.getloadavg()[0]:.2f} |", flush=True)
    print(f"\nmedians over {args.runs} run(s): deploy -> first answer "
          f"{statistics.median(r['deploy_s'] for r in rows):.1f} s, lost "
          f"{sum(r['lost'] for r in rows)} of {sum(r['ok'] + r['lost'] for r in rows)} requests in all, "
          f"replica back {statistics.median(r['back_s'] for r in rows):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
