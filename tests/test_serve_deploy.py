"""deploy/: the Serve config and the KubeRay RayService name importable code and valid options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.serve.config import gRPCOptions
from ray.serve.schema import ServeDeploySchema

from server.app import DEPLOYMENT_KEYS, GRPC_SERVICERS, SERVE_ENV, build_app
from server.config import ServerConfig
from store.catalog import journal_mode

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def serve_configs() -> list[tuple[str, dict[str, Any]]]:
    local = yaml.safe_load((DEPLOY / "serve_config.yaml").read_text())
    docs = list(yaml.safe_load_all((DEPLOY / "rayservice.yaml").read_text()))
    service = next(d for d in docs if d["kind"] == "RayService")
    return [("serve_config", local), ("rayservice", yaml.safe_load(service["spec"]["serveConfigV2"]))]


@pytest.mark.parametrize(("name", "config"), serve_configs(), ids=lambda x: x if isinstance(x, str) else "")
def test_serve_config_names_the_app(name: str, config: dict[str, Any]) -> None:
    schema = ServeDeploySchema.model_validate(config)
    assert schema.grpc_options.grpc_servicer_functions == GRPC_SERVICERS
    opts = gRPCOptions(**schema.grpc_options.model_dump(exclude_unset=True))
    assert all(callable(fn) for fn in opts.grpc_servicer_func_callable)  # importable
    (app,) = schema.applications
    assert app.import_path == "server.app:build_app"
    args = dict(app.args)
    for k in DEPLOYMENT_KEYS:
        args.pop(k, None)
    ServerConfig.from_args(args)  # every arg is a known, valid server option
    (dep,) = app.deployments
    assert dep.name == "Polyhead"
    assert dep.max_ongoing_requests > ServerConfig.from_args(args).max_batch_rows


def test_build_app_from_config_args(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYHEAD_TOKEN", "t")
    for _, config in serve_configs():
        build_app(config["applications"][0]["args"])
    monkeypatch.delenv("POLYHEAD_TOKEN")
    with pytest.raises(ValueError, match="insecure"):
        build_app({})
    build_app({"insecure": True})


def test_rayservice_cluster() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "rayservice.yaml").read_text()))
    service = next(d for d in docs if d["kind"] == "RayService")
    pvc = next(d for d in docs if d["kind"] == "PersistentVolumeClaim")
    assert service["apiVersion"] == "ray.io/v1"
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    serve_cfg = yaml.safe_load(service["spec"]["serveConfigV2"])
    app = serve_cfg["applications"][0]
    dep = app["deployments"][0]
    assert dep["autoscaling_config"]["max_replicas"] >= dep["autoscaling_config"]["min_replicas"]
    assert dep["ray_actor_options"]["num_gpus"] == 1 and app["args"]["device"] == "cuda"
    cluster = service["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        spec = group["template"]["spec"]
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]}
        (container,) = spec["containers"]
        env = {e["name"]: e for e in container["env"]}
        mount = next(m for m in container["volumeMounts"] if claims.get(m["name"]) == "polyhead-store")
        assert env["POLYHEAD_STORE"]["value"] == mount["mountPath"] == app["args"]["store"]
        # a catalog shared by pods on several nodes must not be in WAL mode
        assert journal_mode(env["POLYHEAD_STORE_JOURNAL"]["value"]) == "delete"
        assert "secretKeyRef" in env["POLYHEAD_TOKEN"]["valueFrom"]  # never a literal token
        assert {k: env[k]["value"] for k in SERVE_ENV} == SERVE_ENV
    gpu = [g for g in cluster["workerGroupSpecs"]
           if g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")]
    assert gpu and gpu[0]["maxReplicas"] >= dep["autoscaling_config"]["max_replicas"]
