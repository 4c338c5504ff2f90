"""The Ray Serve application: `serve run deploy/serve_config.yaml` or `polyhead serve`.

Import path for Serve configs: ``polyhead.server.app:build_app`` (an application builder: its
``args`` are ServerConfig fields plus the deployment options below).
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from polyhead.server._private.decoders import DEFAULT_UPLOAD_BYTES
from polyhead.server._private.replica import Polyhead
from polyhead.server.config import ConfigError, ServerConfig

APP_NAME = "polyhead"
GRPC_SERVICERS = [  # the generated functions, with lenient request parsing (see there)
    "polyhead.server._private.decoders.add_InferenceServicer_to_server",
    "polyhead.server._private.decoders.add_RegistryServicer_to_server",
    "polyhead.server._private.decoders.add_TrainingServicer_to_server",
    "polyhead.server._private.decoders.add_AdminServicer_to_server",
]
# Ray Serve's "throughput optimized" settings (RAY_SERVE_THROUGHPUT_OPTIMIZED, less direct
# ingress, which would bypass Serve's gRPC proxy): they halve Serve's CPU per request
# (measured: proxy 3.3 -> 1.6 ms, replica 2.4 -> 1.0 ms on this 2-core machine). They are
# read when Ray starts, so they belong in the environment of `ray start` / the pods.
SERVE_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
    "RAY_SERVE_LOG_TO_STDERR": "0",
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
    "RAY_SERVE_FREEZE_GC_ON_STARTUP": "1",
    # The largest message gRPC takes at all, at Serve's proxy (2 GiB by default: a 200 MB
    # message was read whole before its token was looked at) and on the proxy -> replica
    # hop (4 MB by default: an Upload over 4 MB failed INTERNAL): the largest Upload. Each
    # method's own limit is enforced below that (polyhead.server._private.decoders).
    "RAY_SERVE_GRPC_MAX_MESSAGE_SIZE": str(DEFAULT_UPLOAD_BYTES),
    "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(DEFAULT_UPLOAD_BYTES),
    # Serve gives a new proxy 5 s to answer its readiness check, 3 times, then kills it and
    # starts over; on a busy 2-core host its imports alone take longer, and `serve.start`
    # failed after 60 s. A longer check delays nothing when the proxy is quick.
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30",
    # Ray starts its workers at nice 15, so that a driver and the raylet stay responsive
    # beside heavy tasks. Here the workers are the server (replicas, proxy, controller): at
    # nice 15, any other work on the host took the CPU from them. With two busy loops
    # beside it, the fuzz test's Classify calls took 428 s instead of 44 s (BENCHMARKS.md
    # "Suite time"). At 0 they share the CPU evenly with the rest.
    "RAY_worker_niceness": "0",
}
DEPLOYMENT_KEYS = ("num_replicas", "num_cpus", "num_gpus", "max_ongoing_requests",
                   "autoscaling_config", "access_log")


def deployment_options(num_replicas: int | str | None = None, num_cpus: float = 1.0,
                       num_gpus: float = 0.0, max_ongoing_requests: int = 2048,
                       autoscaling_config: dict[str, Any] | None = None,
                       access_log: bool = False) -> dict[str, Any]:
    """Serve options for the Polyhead deployment (a Serve config's ``deployments`` entry
    overrides them).

    max_ongoing_requests must be well above the batch size, or batches never fill: Serve
    stops routing to a replica once that many requests are in flight there (over it, a
    replica behind direct ingress answers RESOURCE_EXHAUSTED, which clients retry).
    """
    opts: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": num_cpus, "num_gpus": num_gpus},
        "max_ongoing_requests": max_ongoing_requests,
        "logging_config": {"enable_access_log": access_log},  # a log line per request costs CPU
    }
    if autoscaling_config:
        opts["autoscaling_config"] = autoscaling_config
    elif num_replicas is not None:
        opts["num_replicas"] = num_replicas
    return opts


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The application; refuses to build with an open Registry unless ``insecure``."""
    args = dict(args or {})
    opts = {k: args.pop(k) for k in DEPLOYMENT_KEYS if k in args}
    config = ServerConfig.from_args(args)
    config.check_auth()
    if config.device != "cpu":
        opts.setdefault("num_gpus", 1)
    return Polyhead.options(**deployment_options(**opts)).bind(config)  # type: ignore[attr-defined]


def app_for(config: ServerConfig, **options: Any) -> Application:
    """The application for an already-built config (the CLI and tests)."""
    config.check_auth()
    return Polyhead.options(**deployment_options(**options)).bind(config)  # type: ignore[attr-defined]


__all__ = ["APP_NAME", "GRPC_SERVICERS", "ConfigError", "app_for", "build_app"]
