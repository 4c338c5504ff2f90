"""What an abusive client costs a live `polyhead serve` (issue 30), printed as a table.

Starts `polyhead serve` (the one given by --polyhead: this tree's, or another checkout's to
measure "before") on free loopback ports with a Registry and an inference token set, a
temporary HOME and store (the shipped `sentiment` example on the packaged backbone), then:

1. an unauthenticated 200 MB message: gRPC Classify, gRPC Upload, HTTP POST; the time to
   the refusal, and the peak RSS growth of Serve's proxy and of the replica meanwhile;
2. an unauthenticated flood (64 concurrent Classify calls of 100 KB each, no token) while
   another, authenticated client sends 1-input Classify calls one after another: that
   client's p50/p99 without and with the flood;
3. the replica's RSS after 100 Classify calls with 1 MB version strings (authenticated).

Every loop is bounded; the server is stopped at the end (SIGTERM, then SIGKILL).

    python -m bench.abuse [--polyhead /work/wt-before/.venv/bin/polyhead] [--seconds 15]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil

from polyhead.v1 import polyhead_pb2 as pb
from polyhead.v1 import polyhead_pb2_grpc as pb_grpc

MB = 1 << 20
REGISTRY, INFERENCE = "bench-registry-token", "bench-inference-token"
BIG = 200 * MB
CHANNEL = [("grpc.max_send_message_length", 512 * MB), ("grpc.max_receive_message_length", 64 * MB)]


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    grpc_port: int
    http_port: int
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def processes(self, marker: str) -> list[psutil.Process]:
        out = []
        for p in psutil.Process(self.proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if marker in " ".join(p.cmdline()):
                    out.append(p)
        return out

    def rss(self, marker: str) -> int:
        total = 0
        for p in self.processes(marker):
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(polyhead: str, workdir: Path) -> Iterator[Server]:
    home = workdir / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "POLYHEAD_STORE": str(workdir / "store"),
           "POLYHEAD_TOKEN": REGISTRY, "POLYHEAD_INFERENCE_TOKEN": INFERENCE, "HF_HUB_OFFLINE": "1"}
    env.pop("POLYHEAD_TOKEN_FILE", None)
    server = Server(None, free_port(), free_port(), workdir / "serve.log")  # type: ignore[arg-type]
    with server.log.open("w") as out:
        server.proc = subprocess.Popen(
            [polyhead, "serve", "--port", str(server.grpc_port), "--http-port", str(server.http_port),
             "--replicas", "1"], env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        wait_ready(server)
        yield server
    finally:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait()


def wait_ready(server: Server, deadline_s: float = 600) -> None:
    stop = time.monotonic() + deadline_s
    with grpc.insecure_channel(server.address) as ch:
        stub = pb_grpc.InferenceStub(ch)
        while time.monotonic() < stop:
            if server.proc.poll() is not None:
                raise RuntimeError(f"polyhead serve exited:\n{server.log.read_text()[-3000:]}")
            with contextlib.suppress(grpc.RpcError):
                classify(stub, token=INFERENCE, timeout=10)
                return
            time.sleep(1)
    raise RuntimeError("polyhead serve did not answer in time")


def classify(stub: pb_grpc.InferenceStub, token: str | None, text: str = "a fine film",
             version: str = "", timeout: float = 60) -> pb.ClassifyResponse:
    md = (("authorization", f"Bearer {token}"),) if token else ()
    return stub.Classify(pb.ClassifyRequest(task_id="sentiment", version=version,
                                            inputs=[pb.Input(text=text)]),
                         metadata=md, timeout=timeout)


@contextlib.contextmanager
def peak_rss(server: Server, markers: tuple[str, ...]) -> Iterator[dict[str, int]]:
    """Peak RSS growth (bytes) of each marked process group while the block runs."""
    base = {m: server.rss(m) for m in markers}
    peak = dict(base)
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            for m in markers:
                peak[m] = max(peak[m], server.rss(m))

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out: dict[str, int] = {}
    try:
        yield out
    finally:
        stop.set()
        t.join()
        out.update({m: peak[m] - base[m] for m in markers})


def grpc_big(server: Server, method: str) -> tuple[float, str]:
    """An unauthenticated 200 MB message: (seconds to the answer, its status)."""
    with grpc.insecure_channel(server.address, options=CHANNEL) as ch:
        t0 = time.perf_counter()
        try:
            if method == "Classify":
                classify(pb_grpc.InferenceStub(ch), token=None, text="x" * BIG, timeout=300)
            else:
                pb_grpc.RegistryStub(ch).Upload(pb.UploadRequest(artifact=b"\0" * BIG), timeout=300)
            code = "OK"
        except grpc.RpcError as e:
            code = e.code().name
        return time.perf_counter() - t0, code


def http_big(server: Server) -> tuple[float, str]:
    """An unauthenticated 200 MB POST, sent in 1 MB pieces until the server answers (or
    stops reading): (seconds to the status line, the status)."""
    head = (f"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {BIG}\r\nConnection: close\r\n\r\n").encode()
    chunk = b" " * MB
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=300) as s:
        t0 = time.perf_counter()
        s.sendall(head)
        for _ in range(BIG // MB):
            if select.select([s], [], [], 0)[0]:
                break  # the answer came before the body was sent
            try:
                s.sendall(chunk)
            except OSError:  # the server closed the connection
                break
        status = s.recv(64).split(b"\r\n", 1)[0].decode(errors="replace")
        return time.perf_counter() - t0, status.split(" ", 2)[1] if " " in status else status


def latencies(server: Server, seconds: float, flood: bool) -> list[float]:
    """An authenticated client's 1-input Classify latencies (ms) for ``seconds``, with or
    without 64 concurrent unauthenticated 100 KB Classify calls."""
    stop = threading.Event()

    def flooder() -> None:
        with grpc.insecure_channel(server.address, options=CHANNEL) as ch:
            stub = pb_grpc.InferenceStub(ch)
            while not stop.is_set():
                with contextlib.suppress(grpc.RpcError):
                    classify(stub, token=None, text="y" * (100 << 10), timeout=30)

    pool = ThreadPoolExecutor(64) if flood else None
    if pool is not None:
        for _ in range(64):
            pool.submit(flooder)
        time.sleep(2.0)  # the flood is under way
    out: list[float] = []
    try:
        with grpc.insecure_channel(server.address) as ch:
            stub = pb_grpc.InferenceStub(ch)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                t0 = time.perf_counter()
                classify(stub, token=INFERENCE, timeout=60)
                out.append((time.perf_counter() - t0) * 1000)
    finally:
        stop.set()
        if pool is not None:
            pool.shutdown(wait=True)
    return out


def oversized_versions(server: Server, n: int = 100) -> tuple[float, float, str]:
    """Replica RSS (MiB) before and after ``n`` Classify calls with 1 MB version strings."""
    with grpc.insecure_channel(server.address, options=CHANNEL) as ch:
        stub = pb_grpc.InferenceStub(ch)
        before = server.rss("ServeReplica")
        code = ""
        for i in range(n):
            try:
                classify(stub, token=INFERENCE, version=f"{i:06d}" + "x" * MB)
                code = "OK"
            except grpc.RpcError as e:
                code = e.code().name
        time.sleep(2.0)
        return before / MB, server.rss("ServeReplica") / MB, code


def pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100)[q - 1] if len(xs) >= 2 else float("nan")


def measure(server: Server, seconds: float) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    markers = ("ProxyActor", "ServeReplica")
    cases: list[tuple[str, Callable[[], tuple[float, str]]]] = [
        ("gRPC Classify, 200 MB, no token", lambda: grpc_big(server, "Classify")),
        ("gRPC Upload, 200 MB, no token", lambda: grpc_big(server, "Upload")),
        ("HTTP POST /v1/classify, 200 MB, no token", lambda: http_big(server)),
    ]
    for name, run in cases:
        with peak_rss(server, markers) as grew:
            secs, code = run()
        rows.append((name, f"{code} in {secs:.2f} s; peak RSS +{grew['ProxyActor'] / MB:.0f} MB proxy, "
                           f"+{grew['ServeReplica'] / MB:.0f} MB replica"))
    calm = latencies(server, seconds, flood=False)
    loud = latencies(server, seconds, flood=True)
    rows.append(("other client, alone: p50 / p99 (ms)", f"{pct(calm, 50):.0f} / {pct(calm, 99):.0f} "
                                                          f"({len(calm)} calls)"))
    rows.append(("other client, c=64 unauthenticated flood: p50 / p99 (ms)",
                 f"{pct(loud, 50):.0f} / {pct(loud, 99):.0f} ({len(loud)} calls)"))
    before, after, code = oversized_versions(server)
    rows.append(("replica RSS, 100 x 1 MB version strings", f"{before:.0f} -> {after:.0f} MiB "
                                                            f"(+{after - before:.0f}; last: {code})"))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--polyhead", default=str(Path(sys.executable).parent / "polyhead"),
                    help="the `polyhead` entry point to serve with (default: this venv's)")
    ap.add_argument("--seconds", type=float, default=15.0, help="each latency window")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="polyhead-abuse-") as tmp, \
            serving(args.polyhead, Path(tmp)) as server:
        rows = measure(server, args.seconds)
    width = max(len(r[0]) for r in rows)
    print(f"polyhead: {args.polyhead}")
    print(f"{'probe':<{width}}  result")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
