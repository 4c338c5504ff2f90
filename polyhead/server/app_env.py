"""How requests reach the replicas (read by Ray when it starts, so set before `ray start`)."""

from __future__ import annotations

INGRESS_ENV: dict[str, dict[str, str]] = {
    # Serve's gRPC and HTTP proxies on --port / --http-port forward to the replicas.
    "proxy": {},
    # Each ingress replica serves gRPC and HTTP itself (ports from Serve's direct-ingress
    # ranges, 40000+ for gRPC); Serve's proxy leaves the request path.
    "direct": {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"},
    # Direct ingress behind Serve's HAProxy, which listens on --port / --http-port.
    "haproxy": {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"},
}
DEFAULT_INGRESS = "proxy"
