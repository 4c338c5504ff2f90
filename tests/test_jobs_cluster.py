"""A training job on a real two-node Ray cluster, as tests/test_cluster.py builds one
(`ray start --head`, `ray start --address`, deploy/serve_config.yaml with `serve deploy`):
only the second node has the training resource, so the job runs there, and Classify keeps
answering while it trains. Run it alone, under the shared lock:
flock /tmp/polyhead-ray.lock .venv/bin/python -m pytest tests/test_jobs_cluster.py
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
import yaml

from bench.cluster import cluster_env, local_cluster, serve_config, wait_for
from polyhead.client import PolyheadClient, PolyheadError
from tests.test_jobs import tsv

pytestmark = pytest.mark.integration
EXAMPLE = "sentiment"  # published by the shipped config's seed_examples into the empty store


def test_the_job_runs_on_the_training_node_while_classify_answers(tmp_path: Path) -> None:
    token = uuid.uuid4().hex
    config = tmp_path / "serve_config.yaml"
    with local_cluster(tmp_path, cluster_env(token), cpus_per_node=2) as cluster:
        grpc_port = cluster.port()
        config.write_text(yaml.safe_dump(serve_config(tmp_path / "store", grpc_port, cluster.port(),
                                                      replicas=1)))
        cluster.start_head()
        cluster.add_node("trainer", {"polyhead_train": 1})
        cluster.serve_deploy(config)
        address = f"127.0.0.1:{grpc_port}"
        with PolyheadClient(address, token, retries=0, timeout_s=30) as c:
            wait_for("first answer", lambda: c.classify(EXAMPLE, "a fine meal"), 600, every_s=1.0)
        trainer = next(n["node_id"] for n in cluster.ray_list("nodes")
                       if n["state"] == "ALIVE" and not n.get("is_head_node"))
        answers, errors, stop = [], [], threading.Event()

        def classify_all_along() -> None:
            with PolyheadClient(address, timeout_s=60) as c:
                while not stop.is_set():
                    try:
                        answers.append(c.classify(EXAMPLE, "what a lovely day")[0]["label"])
                    except PolyheadError as e:
                        errors.append(e)

        with PolyheadClient(address, token, timeout_s=120) as c:
            ds = c.upload_dataset(tsv(48), "train.tsv")["dataset_id"]
            job = c.create_job("cluster-job", "lora", ds, dev_fraction=0.25,
                               options={"epochs": "2", "batch_size": "8", "max_length": "32"})
            loader = threading.Thread(target=classify_all_along)
            events, during, seen = [], 0, 0
            for e in c.watch_job(job["job_id"], timeout_s=900):
                events.append(e)
                if e["kind"] == "started":
                    loader.start()
                    seen = len(answers)
                if e["kind"] == "published":
                    during = len(answers) - seen
            stop.set()
            loader.join()
            kinds = [e["kind"] for e in events if e["kind"] != "step"]
            assert kinds == ["queued", "started", "epoch", "epoch", "published"], events
            started = next(e for e in events if e["kind"] == "started")
            assert trainer[:12] in started["node"] and started["resources"]["polyhead_train"] == 1
            assert during > 0 and errors == []  # serving answered the whole time it trained
            res = c.classify_raw("cluster-job", "good fun")
            assert res.version == events[-1]["version"]
