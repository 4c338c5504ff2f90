"""deploy/: the Serve config, the KubeRay RayService and its companions name importable code,
validate against the real CRD schemas (tests/schemas/), and keep the conventions a cluster
needs (ports, Secrets, env, memory); the image's pins agree with the project's; `polyhead
serve` refuses a busy port in one line."""

from __future__ import annotations

import configparser
import json
import re
import shutil
import socket
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from ray.serve.config import gRPCOptions
from ray.serve.schema import ServeDeploySchema

from polyhead.server._private.decoders import proxy_tokens
from polyhead.server.app import DEPLOYMENT_KEYS, GRPC_SERVICERS, SERVE_ENV, build_app
from polyhead.server.config import ServerConfig

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
SCHEMAS = Path(__file__).parent / "schemas"
RAYSERVICE_SCHEMAS = sorted(SCHEMAS.glob("kuberay-*-rayservice-v1.json"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
MiB, GiB = 1 << 20, 1 << 30


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def rayservice() -> dict[str, Any]:
    return next(d for d in docs("rayservice.yaml") if d["kind"] == "RayService")


def serve_configs() -> list[tuple[str, dict[str, Any]]]:
    local = yaml.safe_load((DEPLOY / "serve_config.yaml").read_text())
    return [("serve_config", local), ("rayservice", yaml.safe_load(rayservice()["spec"]["serveConfigV2"]))]


def groups() -> list[dict[str, Any]]:
    cluster = rayservice()["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]


def ray_container(group: dict[str, Any]) -> dict[str, Any]:
    (container,) = group["template"]["spec"]["containers"]
    return container


def quantity(q: str | int) -> int:
    """A Kubernetes memory quantity in bytes (the suffixes these manifests use)."""
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)?", str(q))
    assert m, f"unexpected quantity {q!r}"
    return int(m[1]) * {None: 1, "Ki": 1 << 10, "Mi": MiB, "Gi": GiB, "Ti": 1 << 40}[m[2]]


# -- the Serve application ---------------------------------------------------------------

@pytest.mark.parametrize(("name", "config"), serve_configs(), ids=lambda x: x if isinstance(x, str) else "")
def test_serve_config_names_the_app(name: str, config: dict[str, Any]) -> None:
    schema = ServeDeploySchema.model_validate(config)
    assert schema.grpc_options.grpc_servicer_functions == GRPC_SERVICERS
    opts = gRPCOptions(**schema.grpc_options.model_dump(exclude_unset=True))
    assert all(callable(fn) for fn in opts.grpc_servicer_func_callable)  # importable
    (app,) = schema.applications
    assert app.import_path == "polyhead.server.app:build_app"
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


# -- the manifests against the CRDs' schemas ------------------------------------------------

def strict(schema: Any) -> Any:
    """The schema with unknown fields refused, as `kubectl apply --validate=strict` does
    (a CRD's structural schema prunes them silently: a typo would just vanish)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


# Fields the KubeRay API marks "Deprecated: This field is not used anymore" (the CRDs carry
# no descriptions): ray-operator/apis/ray/v1/rayservice_types.go at v1.7.0.
DEPRECATED = ("serviceUnhealthySecondThreshold", "deploymentUnhealthySecondThreshold")


@pytest.mark.parametrize("schema_file", RAYSERVICE_SCHEMAS, ids=lambda p: p.name.split("-rayservice")[0])
def test_rayservice_valid_against_kuberay_crd(schema_file: Path) -> None:
    schema = json.loads(schema_file.read_text())
    doc = rayservice()
    jsonschema.validate(doc, strict(schema))
    assert not set(DEPRECATED) & set(doc["spec"])


def test_rayservice_schemas_vendored() -> None:
    versions = {p.name.split("-rayservice")[0] for p in RAYSERVICE_SCHEMAS}
    assert versions >= {"kuberay-v1.6.2", "kuberay-v1.7.0"}
    readme = (SCHEMAS / "README.md").read_text()
    assert all(p.name in readme for p in SCHEMAS.glob("*.json"))  # each has its source noted


def test_a_typo_is_refused() -> None:
    schema = strict(json.loads(RAYSERVICE_SCHEMAS[-1].read_text()))
    doc = rayservice()
    doc["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParam"] = {}
    with pytest.raises(jsonschema.ValidationError, match="rayStartParam"):
        jsonschema.validate(doc, schema)


def test_podmonitor_valid_and_scrapes_the_ray_pods() -> None:
    schema = json.loads((SCHEMAS / "prometheus-operator-v0.93.0-podmonitor-v1.json").read_text())
    (monitor,) = docs("podmonitor.yaml")
    jsonschema.validate(monitor, strict(schema))
    selector = monitor["spec"]["selector"]["matchLabels"]
    for group in groups():
        labels = group["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()
        ports = {p["name"]: p["containerPort"] for p in ray_container(group)["ports"]}
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            assert ports[endpoint["port"]] == int(group["rayStartParams"]["metrics-export-port"])


# -- cluster conventions ----------------------------------------------------------------------

def test_grpc_port_on_the_serve_service_as_h2c() -> None:
    spec = rayservice()["spec"]
    serve_cfg = yaml.safe_load(spec["serveConfigV2"])
    grpc_port, http_port = serve_cfg["grpc_options"]["port"], serve_cfg["http_options"]["port"]
    for group in groups():
        ports = {p["name"]: p["containerPort"] for p in ray_container(group)["ports"]}
        # KubeRay copies ports named `serve` or `serve-*` onto the serve Service
        assert ports["serve-grpc"] == grpc_port and ports["serve"] == http_port
    svc_ports = {p["name"]: p for p in spec["serveService"]["spec"]["ports"]}
    assert svc_ports["serve-grpc"]["port"] == grpc_port
    assert svc_ports["serve-grpc"]["appProtocol"] == "kubernetes.io/h2c"


def test_secrets_come_from_the_template() -> None:
    (secret,) = docs("secret.template.yaml")
    spec = rayservice()["spec"]
    name, keys = secret["metadata"]["name"], set(secret["stringData"])
    # every value is a ${VAR} placeholder filled at apply time: no token is committed
    assert all(re.fullmatch(r"\$\{[A-Z_]+\}", v) for v in secret["stringData"].values())
    auth = spec["rayClusterConfig"]["authOptions"]
    assert auth["mode"] == "token" and auth["secretName"] == name and "auth_token" in keys
    for group in groups():
        env = {e["name"]: e for e in ray_container(group)["env"]}
        for var, key in (("POLYHEAD_TOKEN", "token"), ("POLYHEAD_STORE", "store-url")):
            assert env[var]["valueFrom"]["secretKeyRef"] == {"name": name, "key": key}
        refs = [e["valueFrom"]["secretKeyRef"] for e in env.values() if "valueFrom" in e]
        assert all(r["name"] == name and r["key"] in keys for r in refs)


def test_every_pods_proxy_checks_the_apps_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serve's gRPC proxy runs on every pod (proxy_location EveryNode): each pod's environment
    tells it the tokens the app itself reads there, so a call without the Registry token is
    refused before its message is read, as under `polyhead serve`."""
    (secret,) = docs("secret.template.yaml")
    values = {key: f"value-of-{key}" for key in secret["stringData"]}  # as envsubst fills them
    for group in groups():
        for e in ray_container(group)["env"]:
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            monkeypatch.setenv(e["name"], values[ref["key"]] if ref else e["value"])
        app = ServerConfig()
        assert app.registry_token() == values["token"]
        assert proxy_tokens() == (app.registry_token(), app.inference_token_value())
        for e in ray_container(group)["env"]:
            monkeypatch.delenv(e["name"])


def test_store_is_postgresql_with_nothing_shared_on_disk() -> None:
    spec = rayservice()["spec"]
    assert [d["kind"] for d in docs("rayservice.yaml")] == ["RayService"]  # no shared volume claim
    args = yaml.safe_load(spec["serveConfigV2"])["applications"][0]["args"]
    assert "store" not in args and "token" not in args  # from the Secret, via the env
    assert "postgresql://" in (DEPLOY / "secret.template.yaml").read_text()
    for group in groups():
        pod = group["template"]["spec"]
        assert all("persistentVolumeClaim" not in v for v in pod.get("volumes", []))
        env = {e["name"] for e in ray_container(group)["env"]}
        assert "POLYHEAD_STORE_JOURNAL" not in env
        assert {e["name"]: e.get("value") for e in ray_container(group)["env"]
                if e["name"] in SERVE_ENV} == SERVE_ENV


def test_pods_run_as_the_ray_user_and_bound_nothing_open() -> None:
    spec = rayservice()["spec"]
    for group in groups():
        pod = group["template"]["spec"]
        sc = pod["securityContext"]
        assert sc["runAsNonRoot"] and sc["runAsUser"] == 1000 and "fsGroup" in sc
        container = ray_container(group)
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        # KubeRay binds the dashboard to 0.0.0.0 unless told otherwise (its operator needs it);
        # token auth guards it, and the NetworkPolicy below limits who reaches it
        assert group["rayStartParams"].get("dashboard-host", "0.0.0.0") == "0.0.0.0"
    assert spec["rayClusterConfig"]["authOptions"]["mode"] == "token"
    (policy,) = docs("networkpolicy.yaml")
    labels = groups()[0]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    for rule in policy["spec"]["ingress"]:
        ports = {p["port"] for p in rule.get("ports", [])}
        if 8265 in ports or not ports:  # the dashboard (or every port): never from anywhere
            assert rule.get("from"), rule


def test_memory_fits_object_store_and_host_tier() -> None:
    spec = rayservice()["spec"]
    app = yaml.safe_load(spec["serveConfigV2"])["applications"][0]
    dep = app["deployments"][0]
    replica_mem = app["args"]["host_budget_mb"] * MiB + 4 * GiB  # + torch, backbone, CUDA context
    for group in groups():
        if group.get("groupName") == "train":
            continue  # no replica there (test_training_group_is_apart_from_serving)
        limit = quantity(ray_container(group)["resources"]["limits"]["memory"])
        store = int(group["rayStartParams"]["object-store-memory"])
        shm = next(v for v in group["template"]["spec"]["volumes"] if v["name"] == "shm")
        assert shm["emptyDir"]["medium"] == "Memory" and quantity(shm["emptyDir"]["sizeLimit"]) >= store
        gpus = int(ray_container(group)["resources"]["limits"].get("nvidia.com/gpu", 0))
        replicas_here = gpus // dep["ray_actor_options"]["num_gpus"]
        assert store + replicas_here * replica_mem + 1 * GiB <= limit, group.get("groupName", "head")
    gpu = [g for g in spec["rayClusterConfig"]["workerGroupSpecs"]
           if ray_container(g)["resources"]["limits"].get("nvidia.com/gpu")]
    assert gpu and gpu[0]["maxReplicas"] >= dep["autoscaling_config"]["max_replicas"]
    assert dep["ray_actor_options"]["num_gpus"] == 1 and app["args"]["device"] == "cuda"


def _start_resources(group: dict[str, Any]) -> dict[str, float]:
    """A group's custom resources: KubeRay's rayStartParams `resources` is a quoted JSON."""
    text = group["rayStartParams"].get("resources")
    return json.loads(json.loads(text)) if text else {}


def test_training_group_is_apart_from_serving() -> None:
    """Training jobs run only on the `train` group (the only one with the job resource),
    and serving replicas only where `polyhead_serve` is: neither takes the other's CPUs
    or GPUs."""
    spec = rayservice()["spec"]
    app = yaml.safe_load(spec["serveConfigV2"])["applications"][0]
    args, dep = app["args"], app["deployments"][0]
    workers = {g["groupName"]: g for g in spec["rayClusterConfig"]["workerGroupSpecs"]}
    train, serve = _start_resources(workers["train"]), _start_resources(workers["gpu"])
    assert train == {args["job_resource"]: 1} and "polyhead_serve" not in train
    assert dep["ray_actor_options"]["resources"] == {"polyhead_serve": 1} and serve == {"polyhead_serve": 1}
    limits = ray_container(workers["train"])["resources"]["limits"]
    assert args["job_gpus"] <= int(limits.get("nvidia.com/gpu", 0))
    assert args["job_cpus"] <= int(limits["cpu"]) and workers["train"]["minReplicas"] == 0
    assert args["max_jobs"] >= 1 and ServerConfig.from_args(
        {k: v for k, v in args.items() if k not in DEPLOYMENT_KEYS}).job_resource == args["job_resource"]


def test_postgres_manifest_serves_the_store_url() -> None:
    kinds = {d["kind"]: d for d in docs("postgres.yaml")}
    svc, sts = kinds["Service"], kinds["StatefulSet"]
    env = {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    port = svc["spec"]["ports"][0]["port"]
    url = (f"postgresql://{env['POSTGRES_USER']['value']}:PASSWORD@{svc['metadata']['name']}:{port}/"
           f"{env['POSTGRES_DB']['value']}")
    assert url in (DEPLOY / "postgres.yaml").read_text()
    assert "secretKeyRef" in env["POSTGRES_PASSWORD"]["valueFrom"]


# -- the image --------------------------------------------------------------------------------

def dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S*)$", (DEPLOY / "Dockerfile").read_text(), re.M))


def test_image_pins_agree_with_the_project() -> None:
    args, text = dockerfile_args(), (DEPLOY / "Dockerfile").read_text()
    base = r"^FROM rayproject/ray:\$\{RAY_VERSION\}-\$\{PYTHON_TAG\}\$\{RAY_PLATFORM\}$"
    assert re.search(base, text, re.M)
    ray_pin = args["RAY_VERSION"]
    ray_req = next(d for d in PYPROJECT["project"]["optional-dependencies"]["server"] if d.startswith("ray["))
    assert Version(ray_pin) in SpecifierSet(ray_req.split("]", 1)[1])
    assert ray_pin == ray.__version__, "the image must run the Ray the tests ran on"
    assert rayservice()["spec"]["rayClusterConfig"]["rayVersion"] == ray_pin
    py = re.fullmatch(r"py3(\d+)", args["PYTHON_TAG"])
    assert py and Version(f"3.{py[1]}") in SpecifierSet(PYPROJECT["project"]["requires-python"])
    make_torch = re.search(r"torch==([\d.]+)", (ROOT / "Makefile").read_text())
    assert make_torch and args["TORCH_VERSION"] == make_torch[1]
    assert re.search(r'ray\[serve\]==\$\{RAY_VERSION\}', text) and "-c /home/ray/constraints.txt" in text


def test_image_named_with_a_registry_placeholder() -> None:
    version = PYPROJECT["project"]["version"]
    images = {ray_container(g)["image"] for g in groups()}
    assert images == {f"registry.example.com/polyhead:{version}"}
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"^image:", make, re.M) and "-f deploy/Dockerfile" in make


def copied_paths() -> list[str]:
    text = (DEPLOY / "Dockerfile").read_text()
    out = []
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        parts = [p for p in line.split() if not p.startswith("--")]
        out += parts[:-1]
    return out


def test_image_copies_every_package() -> None:
    """Every top-level folder holding an installed package is copied into the image."""
    from setuptools import find_namespace_packages

    copied = copied_paths()
    assert all((ROOT / p).exists() for p in copied)
    found = find_namespace_packages(str(ROOT), **PYPROJECT["tool"]["setuptools"]["packages"]["find"])
    assert "polyhead.client" in found and "polyhead.server" in found
    for pkg in found:
        top = pkg.split(".")[0]
        assert top in copied, f"package {pkg} ({top}/) is not copied into the image"


def test_image_install_has_the_servicers_and_entry_point(tmp_path: Path) -> None:
    """What the image does, minus the base: build the project from exactly the files the
    Dockerfile copies, install it (not editable), and import the servicers and the CLI from
    there, in a fresh interpreter in another directory."""
    ctx = tmp_path / "context"
    ctx.mkdir()
    for p in copied_paths():
        src = ROOT / p
        if src.is_dir():
            shutil.copytree(src, ctx / p, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, ctx / p)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
                    str(ctx)], check=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("polyhead-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"polyhead/server/_private/decoders.py", "polyhead/v1/polyhead_pb2.py",
            "polyhead/server/examples/sentiment.polyhead"} <= names
    entry = configparser.ConfigParser()
    entry.read_string(zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt")))
                      .decode())
    assert entry["console_scripts"]["polyhead"] == "polyhead.cli:main"
    target = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True,
                   timeout=300)
    code = ("import polyhead, polyhead.cli, polyhead.server.app; from ray.serve.config import gRPCOptions; "
            "o = gRPCOptions(grpc_servicer_functions=polyhead.server.app.GRPC_SERVICERS); "
            "assert all(callable(f) for f in o.grpc_servicer_func_callable); "
            "assert callable(polyhead.cli.main); print(polyhead.__file__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(str(target))  # the installed copy, not the checkout


# -- `polyhead serve` on a busy port ------------------------------------------------------------

@pytest.mark.parametrize("flag", ["--port", "--http-port"])
def test_busy_port_is_one_line(tmp_path: Path, flag: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        other = ["--http-port", "0"] if flag == "--port" else ["--port", "0"]
        out = subprocess.run(
            [sys.executable, "-m", "polyhead.cli", "serve", flag, str(port), *other, "--insecure",
             "--store", str(tmp_path / "store")],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)})
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert f"port {port}" in lines[0] and f"{flag} PORT" in lines[0]
