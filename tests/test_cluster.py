"""Polyhead the way a cluster runs it: a real two-node Ray cluster (`ray start --head` plus
`ray start --address`, one replica's CPUs per node), deploy/serve_config.yaml deployed with
`serve deploy` (store, ports and replica count changed, nothing else), driven over gRPC.

Ray runs in subprocesses with RAY_ADDRESS set only in their environment, so in-process
``ray.init()`` tests are unaffected; the cluster is stopped (its processes, found by a marker
in their environment) however the module ends. Run under the shared lock, like every test
that starts Ray: flock /tmp/polyhead-ray.lock .venv/bin/python -m pytest tests/test_cluster.py
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from bench.cluster import (
    Load,
    LocalCluster,
    Node,
    cluster_env,
    local_cluster,
    replicas_answering,
    wait_for,
)
from polyhead.client import PolyheadClient
from polyhead.engine import TaskArtifact
from polyhead.store import encode_artifact, new_manifest

pytestmark = pytest.mark.integration
EXAMPLE = "sentiment"  # published by the shipped config's seed_examples into the empty store


def test_no_port_of_the_cluster_falls_in_a_nodes_worker_port_range(tmp_path):
    """Every port the cluster hands out (GCS, dashboard, Serve's, each node's components)
    lies outside every node's worker range, and no port is given twice (a port free when
    chosen may be a worker's later: Ray refuses to start on such a clash)."""
    cluster = LocalCluster(tmp_path, {})
    serve_ports = [cluster.port(), cluster.port()]
    ranges, given = [], [cluster.gcs_port, cluster.dashboard_port, *serve_ports]
    for _ in range(3):
        _nm, args = cluster._ports()
        opts = dict(a[2:].split("=") for a in args)
        ranges.append(range(int(opts.pop("min-worker-port")), int(opts.pop("max-worker-port")) + 1))
        given += [int(v) for v in opts.values()]
    assert len(set(given)) == len(given)
    assert not any(p in r for p in given for r in ranges)
    assert all(a.isdisjoint(b) for i, a in enumerate(map(set, ranges)) for b in map(set, ranges[i + 1:]))


@dataclass
class Deployed:
    cluster: LocalCluster
    worker: Node
    address: str
    token: str

    def client(self, **kw) -> PolyheadClient:
        return PolyheadClient(self.address, self.token, **kw)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    work = tmp_path_factory.mktemp("cluster")
    token = uuid.uuid4().hex
    config = work / "serve_config.yaml"
    with local_cluster(work, cluster_env(token)) as cluster:
        grpc_port = cluster.write_serve_config(config, work / "store")  # (ports outside every worker range)
        cluster.start_head()
        worker = cluster.add_node("worker")
        cluster.serve_deploy(config)
        d = Deployed(cluster, worker, f"127.0.0.1:{grpc_port}", token)
        with d.client(retries=0, timeout_s=30) as client:
            wait_for("first answer", lambda: client.classify(EXAMPLE, "a fine meal"), 600, every_s=1.0)
        yield d


def test_two_replicas_on_two_nodes(deployed: Deployed) -> None:
    nodes = wait_for("two replica actors", lambda: len(n := deployed.cluster.replica_nodes()) == 2 and n, 120)
    assert len(set(nodes.values())) == 2  # one per node: the head and the worker
    assert deployed.cluster.head_node_id() in nodes.values()
    answered = wait_for("both replicas answer", lambda: (r := replicas_answering(
        deployed.address, EXAMPLE, 2)) and len(r) == 2 and r, 120)
    assert answered == set(nodes)  # the replicas Ray placed are the ones answering


def test_upload_is_seen_by_both_replicas(deployed: Deployed, real_backbone) -> None:
    art = TaskArtifact.random("pasta", real_backbone.spec, 2, seed=7)
    manifest = new_manifest("cluster-upload", art, real_backbone.spec, labels=["no", "yes"])
    with deployed.client() as client:
        version = client.upload(encode_artifact(manifest, art))["version"]
    seen: set[str] = set()

    def both() -> bool:
        with PolyheadClient(deployed.address, retries=0, timeout_s=30) as c:
            res = c.classify_raw("cluster-upload", "good")
        assert res.version == version  # never a miss: the store is shared
        seen.add(res.replica)
        return len(seen) == 2

    wait_for("the upload served by both replicas", both, 120, every_s=0.0)


def test_node_killed_the_other_answers_and_the_replica_comes_back(deployed: Deployed) -> None:
    cluster = deployed.cluster
    head = cluster.head_node_id()
    before = wait_for("two replica actors", lambda: len(n := cluster.replica_nodes()) == 2 and n, 120)
    (on_worker,) = [r for r, node in before.items() if node != head]
    (on_head,) = [r for r, node in before.items() if node == head]
    # one client enters through each node (its answers come from that node's replica)
    with Load(deployed.address, EXAMPLE, n=2, spread_over=[on_worker, on_head]) as load:
        wait_for("load running", lambda: load.ok >= 20, 120)
        cluster.kill_raylet(deployed.worker)
        ok_at_kill = load.ok
        # the head's replica keeps answering, on new connections too
        for _ in range(5):
            with PolyheadClient(deployed.address, retries=10, timeout_s=60) as c:
                assert c.classify(EXAMPLE, "still there?")[0]["label"]
        wait_for("Serve saw the replica die", lambda: on_worker not in cluster.replica_nodes(), 300)
        cluster.add_node("worker")  # as KubeRay restarts the pod
        after = wait_for("the replica restored", lambda: len(n := cluster.replica_nodes()) == 2 and n, 600)
        wait_for("both replicas answer again", lambda: len(replicas_answering(
            deployed.address, EXAMPLE, 2)) == 2, 300)
        time.sleep(1.0)
    assert load.lost == []  # the retrying clients lost nothing
    assert load.ok > ok_at_kill + 5
    # the client that came in through the killed node was answered elsewhere afterwards
    assert load.served[0][0] == on_worker and len(load.served[0]) > 1, load.served
    assert on_worker not in after and head in after.values() and len(set(after.values())) == 2
