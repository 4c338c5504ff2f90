"""`polyhead serve`: start Ray, Serve's gRPC proxy and the Polyhead app locally; block."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from polyhead.server._private.bind import HOST_ENV
from polyhead.server._private.decoders import PROXY_AUTH_ENV, PROXY_INFERENCE_ENV, PROXY_REGISTRY_ENV
from polyhead.server.app_env import DEFAULT_INGRESS, INGRESS_ENV
from polyhead.server.config import (
    BATCH_ORDERS,
    INFERENCE_TOKEN_ENV,
    TOKEN_ENV,
    ConfigError,
    Secret,
    ServerConfig,
    generated_token,
    token_file,
)
from polyhead.store.catalog import absolute, redact

DEFAULT_HOST = "127.0.0.1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


RAY_START_TRIES = 3
RAY_SLOW_START = "timed out during startup"  # ray/_private/node.py: its raylet wait is 30 s, fixed


def start_ray(ray: Any, **init: Any) -> None:
    """``ray.init(**init)``, started again (up to RAY_START_TRIES in all) when Ray's raylet did
    not register within the 30 s that Ray allows it: on a host loaded that heavily the next
    try usually makes it. The failed try's processes end with this one (Ray's atexit)."""
    for attempt in range(1, RAY_START_TRIES + 1):
        try:
            ray.init(**init)
            return
        except Exception as e:
            if RAY_SLOW_START not in str(e) or attempt == RAY_START_TRIES:
                raise
            print(f"polyhead serve: Ray's node did not start in time (try {attempt} of "
                  f"{RAY_START_TRIES}; is the host busy?); starting it again", file=sys.stderr, flush=True)
            ray.shutdown()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve every task in the store over gRPC and HTTP (Ctrl-C stops)")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address gRPC and HTTP listen on (default {DEFAULT_HOST}, this machine "
                   "only; 0.0.0.0 or :: to serve other hosts)")
    p.add_argument("--port", type=int, default=9000, help="gRPC port (default 9000)")
    p.add_argument("--http-port", type=int, default=8000,
                   help="HTTP port of POST /v1/classify and GET /v1/health (default 8000)")
    p.add_argument("--store", help="store folder or postgresql:// URL "
                   "(default $POLYHEAD_STORE or ./polyhead-store)")
    p.add_argument("--backbone", help="local HF encoder folder (default: packaged MiniLM)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "int8", "bf16"),
                   help="the backbone's arithmetic: fp32 (exact), int8 (its Linears int8, smoothed "
                        "with ranges calibrated at start; every task fp32; CPU), bf16 (CUDA, or a "
                        "CPU with AVX512-BF16/AMX)")
    p.add_argument("--release-freed-memory", action="store_true",
                   help="let the replicas' allocator return freed activations to the OS after "
                        "each batch (glibc's default: less resident memory, slower forwards); by "
                        "default they keep them for the next batch")
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--token-file", type=Path, help=f"file holding the Registry bearer token "
                      f"(default ${TOKEN_ENV}, else one generated into {token_file()} (mode "
                      "0600), where client commands find it)")
    auth.add_argument("--token", help=argparse.SUPPRESS)  # deprecated: visible in `ps`
    auth.add_argument("--insecure", action="store_true", help="run with the Registry open")
    inference = p.add_mutually_exclusive_group()
    inference.add_argument("--inference-token-file", type=Path, help="file holding a token "
                           f"Classify then requires (default ${INFERENCE_TOKEN_ENV}; unset: open)")
    inference.add_argument("--inference-token", help="deprecated (visible in `ps`): use "
                           f"${INFERENCE_TOKEN_ENV} or --inference-token-file")
    p.add_argument("--ingress", choices=sorted(INGRESS_ENV), default=DEFAULT_INGRESS,
                   help="how requests reach replicas: 'proxy' (Serve's gRPC/HTTP proxy), "
                   "'direct' (each replica serves gRPC/HTTP itself; Serve's direct ingress), "
                   "'haproxy' (direct ingress behind Serve's HAProxy on --port); default "
                   f"{DEFAULT_INGRESS} (see BENCHMARKS.md, Serving)")
    p.add_argument("--replicas", type=int, default=1,
                   help="copies of the backbone serving at once, each with --cpus (default 1)")
    p.add_argument("--cpus", type=float, default=0,
                   help="CPUs per replica (default: this machine's CPUs less --train-cpus, shared "
                   "by the replicas; at least 1)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per replica (default: its CPUs)")
    p.add_argument("--batch-rows", type=int, default=64, help="rows per batch (default 64)")
    p.add_argument("--batch-wait-ms", type=float, default=2.0,
                   help="how long a batch waits to fill, in ms (default 2)")
    p.add_argument("--batch-order", choices=BATCH_ORDERS, default="fair",
                   help="'fair': tenants with requests waiting share batches by weighted fair "
                   "queueing on tokens (one tenant alone: arrival order); 'fifo': arrival order")
    p.add_argument("--fair-batch-rows", type=int, default=ServerConfig.fair_batch_rows,
                   help="rows per batch while two or more tenants wait (fair order)")
    p.add_argument("--train-cpus", type=int, default=1,
                   help="CPUs this server lends to training jobs (default 1; the replicas keep "
                        "the rest): the node's training resource, so at most this many 1-CPU "
                        "jobs run at once; 0: run no jobs here")
    p.add_argument("--max-jobs-per-tenant", type=int, default=0, metavar="N",
                   help="training jobs of one tenant's tasks that run at once (default 0: no "
                        "limit beyond --train-cpus)")
    p.add_argument("--access-log", action="store_true", help="log every request (costs CPU)")
    p.add_argument("--no-examples", action="store_true",
                   help="do not publish the shipped examples into an empty store")
    limits = p.add_argument_group("publish limits and deletes")
    limits.add_argument("--max-outputs", type=int, default=10_000,
                        help="largest head: labels per task (default 10,000)")
    limits.add_argument("--max-lora-rank", type=int, default=512, help="largest LoRA rank (default 512)")
    limits.add_argument("--max-sparse-density", type=float, default=1.0,
                        help="largest share of a weight a sparse diff may change (default 1.0: any)")
    limits.add_argument("--delete-retention-days", type=float, default=7.0,
                        help="a deleted task stays restorable this long (`polyhead tasks restore`; "
                        "default 7)")
    p.set_defaults(func=run)


def read_token(path: Path, flag: str) -> Secret:
    try:
        text = path.read_text().strip()
    except OSError as e:
        raise ConfigError(f"{flag} {path}: {e.strerror or e}") from e
    if not text:
        raise ConfigError(f"{flag} {path}: the file is empty")
    return Secret(text)


def _token_arg(value: str | None, path: Path | None, flag: str, env: str) -> Secret | None:
    """A token from its file flag, else from the deprecated argv flag (with a warning)."""
    if path is not None:
        return read_token(path, f"{flag}-file")
    if value:
        print(f"polyhead serve: warning: {flag} is deprecated (the token shows in `ps`); set "
              f"${env} or use {flag}-file", file=sys.stderr, flush=True)
        return Secret(value)
    return None


def config_from(args: argparse.Namespace) -> ServerConfig:
    store = args.store or os.environ.get("POLYHEAD_STORE") or "polyhead-store"
    return ServerConfig(
        store=absolute(store),  # a folder made absolute: replicas may run elsewhere
        backbone=str(Path(args.backbone).resolve()) if args.backbone else None,
        device=args.device, precision=args.precision, insecure=args.insecure,
        keep_freed_memory=not args.release_freed_memory,
        token=_token_arg(args.token, args.token_file, "--token", TOKEN_ENV),
        inference_token=_token_arg(args.inference_token, args.inference_token_file,
                                   "--inference-token", INFERENCE_TOKEN_ENV),
        max_batch_rows=args.batch_rows, max_inputs=min(64, args.batch_rows),
        batch_wait_ms=args.batch_wait_ms, batch_order=args.batch_order,
        fair_batch_rows=args.fair_batch_rows, torch_threads=args.threads,
        seed_examples=not args.no_examples, max_outputs=args.max_outputs,
        max_lora_rank=args.max_lora_rank, max_sparse_density=args.max_sparse_density,
        delete_retention_days=args.delete_retention_days,
        jobs=args.train_cpus > 0, max_jobs=max(1, int(args.train_cpus)),
        max_jobs_per_tenant=args.max_jobs_per_tenant)


def check_precision(config: ServerConfig) -> None:
    """Refuse a precision this machine cannot run before Ray starts (ConfigError)."""
    from polyhead.engine.backbone import pick_device
    from polyhead.engine.precision import PrecisionError, dtype_for

    try:
        dtype_for(config.precision, pick_device(config.device))
    except PrecisionError as e:
        raise ConfigError(str(e)) from e


def check_port_free(port: int, flag: str, host: str = "") -> None:
    """Refuse a port another process listens on, before Ray starts (there, a taken port
    ends in a traceback). No SO_REUSEPORT here, unlike Serve's proxy: a second server that
    would silently share a port with a running one is refused too. ``host`` "" or "::":
    every address ([::], which also covers IPv4)."""
    family = socket.AF_INET6 if not host or ":" in host else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError:  # no IPv6 on this host
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
        try:
            sock.bind((host or ("::" if sock.family == socket.AF_INET6 else ""), port))
        except OSError as e:
            raise ConfigError(f"port {port} is not available ({e.strerror}); pick another with "
                              f"{flag} PORT") from e


# Lines Ray prints on every start and stop that say nothing is wrong: serve.run() after our
# serve.start() (which set the ports) "connects to the existing Serve app"; and the
# controller, whose tasks retry forever, exits at the end of its own graceful_shutdown, which
# Ray reports as that task failing although the shutdown is complete.
NOISE = ("Connecting to existing Serve app", "ServeController.graceful_shutdown failed")
# And Ray's and Serve's start-up lines, which `polyhead serve`'s own "serving ... ready" line
# says again; the token warning is about Ray's token auth, which polyhead serve turns on
# deliberately (private_ray_token). Ray's other warnings and errors still print.
STARTED = ("Token authentication is enabled for this Ray cluster", "Started a local Ray instance",
           "Started Serve in namespace", "Application 'polyhead' is ready at")  # app.APP_NAME


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith((NOISE[0], *STARTED))


def quiet_ray() -> None:
    """Drop the NOISE and STARTED lines: a filter on Serve's logger and on the handlers of
    Ray's (its modules' records reach those), and on the driver's printer of the cluster's
    error messages (the "(raylet)" lines; a private Ray function, kept if absent)."""
    from ray._private import worker

    logging.getLogger("ray.serve").addFilter(_DropNoise())
    for handler in logging.getLogger("ray").handlers:
        if not any(isinstance(f, _DropNoise) for f in handler.filters):
            handler.addFilter(_DropNoise())
    printer = getattr(worker, "print_to_stdstream", None)
    if printer is None or getattr(printer, "polyhead_quiet", False):
        return

    def print_to_stdstream(data: dict[str, Any], ignore_prefix: bool) -> None:
        lines = [x for x in data.get("lines", []) if NOISE[1] not in x]
        if lines:
            printer({**data, "lines": lines}, ignore_prefix)

    print_to_stdstream.polyhead_quiet = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = print_to_stdstream


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def tell_proxy_tokens(config: ServerConfig) -> None:
    """Ray's workers (Serve's gRPC proxy among them) inherit this environment: the proxy
    then refuses calls without the right token before it reads their messages."""
    os.environ[PROXY_AUTH_ENV] = "1"
    for env, token in ((PROXY_REGISTRY_ENV, config.registry_token()),
                       (PROXY_INFERENCE_ENV, config.inference_token_value())):
        if token:
            os.environ[env] = token
        else:
            os.environ.pop(env, None)


def private_ray_token(path: Path | None = None) -> Path | None:
    """Ray (token auth on by default) writes ~/.ray/auth_token with the umask's mode: made
    here first, 0600 in a 0700 folder, so Ray reads it instead; an existing one is made
    0600. Nothing when the token comes from Ray's environment variables."""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return None
    path = path or Path.home() / ".ray" / "auth_token"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
        return path
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))  # as Ray's own generator
    return path


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from(args)
        if config.registry_token() is None and not config.insecure:
            # Never an open Registry: without a configured token, use (or make) a saved one.
            config = dataclasses.replace(config, token=Secret(generated_token()))
            print(f"polyhead: Registry token in {token_file()} (client commands read it)",
                  flush=True)
        config.check_auth()
        check_precision(config)
        check_port_free(args.port, "--port", host=args.host)
        check_port_free(args.http_port, "--http-port", host=args.host)
    except (ConfigError, OSError) as e:
        print(f"polyhead serve: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    import ray
    from ray import serve
    from ray.serve.config import gRPCOptions

    from polyhead.server.app import APP_NAME, GRPC_SERVICERS, SERVE_ENV, app_for

    quiet_ray()
    for key, value in {**SERVE_ENV, **INGRESS_ENV[args.ingress]}.items():
        os.environ.setdefault(key, value)  # before Ray starts; the caller's values win
    os.environ[HOST_ENV] = args.host  # Serve's gRPC proxy binds here (polyhead.server._private.bind)
    tell_proxy_tokens(config)
    private_ray_token()
    machine_cpus = os.cpu_count() or 1
    train = max(0, args.train_cpus)
    cpus = args.cpus or max(1.0, (machine_cpus - train) / max(1, args.replicas))
    start_ray(ray, address="local", num_cpus=max(machine_cpus, int(cpus * args.replicas + 0.999) + train),
              resources={"polyhead_train": train} if train else None,
              include_dashboard=False, log_to_driver=False,
              runtime_env={"worker_process_setup_hook": "polyhead.server._private.bind.setup"})
    # From here on Ctrl-C or SIGTERM stops Serve and Ray in order, also while the app is
    # still deploying (replicas may answer before serve.run returns); a second one while
    # stopping changes nothing.
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    serve.start(http_options={"host": args.host, "port": args.http_port},
                grpc_options=gRPCOptions(port=args.port, grpc_servicer_functions=GRPC_SERVICERS),
                logging_config={"enable_access_log": args.access_log})
    serve.run(app_for(config, num_replicas=args.replicas, num_cpus=cpus,
                      num_gpus=1 if args.device == "cuda" else 0, access_log=args.access_log),
              name=APP_NAME, route_prefix="/")
    print(f"polyhead: serving gRPC on {_hostport(args.host, args.port)} and HTTP on "
          f"{_hostport(args.host, args.http_port)} ({args.replicas} replica(s), "
          f"store {redact(config.store or '')}); ready in {time.perf_counter() - t0:.1f} s. Ctrl-C stops.",
          flush=True)
    while not stop.wait(1.0):
        pass
    print("polyhead: stopping", flush=True)
    serve.shutdown()
    ray.shutdown()
    return 0
