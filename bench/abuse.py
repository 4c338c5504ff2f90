"""What an abusive client costs a live `polyhead serve` (issue 30), printed as a table.

Starts `polyhead serve` (the one given by --polyhead: this tree's, or another checkout's to
measure "before") on free loopback ports with a Registry and an inference token set, a
temporary HOME and store (the shipped `sentiment` example on the packaged backbone), then:

1. an unauthenticated 200 MB message: gRPC Classify, gRPC Upload, HTTP POST; the time to
   the refusal, and the peak RSS growth of Serve's proxy and of the replica meanwhile;
2. an unauthenticated flood (64 concurrent Classify calls of 100 KB each, no token) while
   another, authenticated client sends 1-input Classify calls one after another: that
   client's p50/p99 without and with the flood;
3. the replica's RSS after 100 Classify calls with 1 MB version strings (authenticated);
4. what a second probe broke (2026-12-07): an authenticated HTTP body of 580,000 inputs
   (7.2 MB), the time to its refusal and the other client's p50/p99 while one client
   repeats it; 2,100 connections that send an HTTP body's first byte and stop, the other
   client's p50/p99 and failed calls meanwhile; a ClassifyStream whose client sends one
   message and waits for its answer (the time to the first answer); and an API key
   revoked while its stream is open (the messages answered after the revocation).

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
    def flooder(stop: threading.Event) -> None:
        with grpc.insecure_channel(server.address, options=CHANNEL) as ch:
            stub = pb_grpc.InferenceStub(ch)
            while not stop.is_set():
                with contextlib.suppress(grpc.RpcError):
                    classify(stub, token=None, text="y" * (100 << 10), timeout=30)

    out, _ = under(server, seconds, flooder, 64 if flood else 0)
    return out


def under(server: Server, seconds: float, attack: Callable[[threading.Event], None], threads: int,
          timeout: float = 60) -> tuple[list[float], int]:
    """An authenticated client's 1-input Classify latencies (ms) for ``seconds``, and its
    failed calls (each given ``timeout``), while ``threads`` threads run ``attack``."""
    stop = threading.Event()
    pool = ThreadPoolExecutor(threads) if threads else None
    if pool is not None:
        for _ in range(threads):
            pool.submit(attack, stop)
        time.sleep(2.0)  # the attack is under way
    out: list[float] = []
    failed = 0
    try:
        with grpc.insecure_channel(server.address) as ch:
            stub = pb_grpc.InferenceStub(ch)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                t0 = time.perf_counter()
                try:
                    classify(stub, token=INFERENCE, timeout=timeout)
                except grpc.RpcError:
                    failed += 1
                out.append((time.perf_counter() - t0) * 1000)
    finally:
        stop.set()
        if pool is not None:
            pool.shutdown(wait=True)
    return out, failed


def post(server: Server, body: bytes, timeout: float = 120) -> tuple[float, str]:
    """An authenticated POST /v1/classify: (seconds to the answer, its HTTP status)."""
    head = (f"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {INFERENCE}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=timeout) as s:
        t0 = time.perf_counter()
        s.sendall(head + body)
        status = s.recv(64).split(b"\r\n", 1)[0].decode(errors="replace")
        return time.perf_counter() - t0, status.split(" ", 2)[1] if " " in status else status


MANY_INPUTS = ('{"task_id":"sentiment","inputs":[' + ",".join(['{"text":"a"}'] * 580_000)
               + "]}").encode()  # 7.2 MiB: under the 8 MB body cap, so it is read and parsed


def many_inputs_loop(server: Server) -> Callable[[threading.Event], None]:
    def attack(stop: threading.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                post(server, MANY_INPUTS)
    return attack


def slow_bodies(server: Server, n: int = 2100) -> Callable[[threading.Event], None]:
    """One thread holds ``n`` connections, each having sent a body's first byte of 1000."""
    head = (f"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {INFERENCE}\r\nContent-Length: 1000\r\n\r\n{{").encode()

    def attack(stop: threading.Event) -> None:
        socks: list[socket.socket] = []
        try:
            while not stop.is_set():  # keep n open: one the server closed is opened again
                socks = [s for s in socks if not _closed(s)]
                while len(socks) < n and not stop.is_set():
                    try:
                        s = socket.create_connection(("127.0.0.1", server.http_port), timeout=10)
                        s.sendall(head)
                        socks.append(s)
                    except OSError:
                        break
                stop.wait(0.5)
        finally:
            for s in socks:
                s.close()
    return attack


def _closed(s: socket.socket) -> bool:
    if not select.select([s], [], [], 0)[0]:
        return False
    s.close()  # answered (408 or 429) or closed: done with it
    return True


def stream_first_answer(server: Server, wait_s: float = 20) -> str:
    """A ClassifyStream client that sends one message and waits for its answer."""
    import queue

    requests: queue.Queue[pb.ClassifyRequest | None] = queue.Queue()
    requests.put(pb.ClassifyRequest(task_id="sentiment", inputs=[pb.Input(text="a fine film")]))

    def messages() -> Iterator[pb.ClassifyRequest]:
        while (m := requests.get()) is not None:
            yield m

    with grpc.insecure_channel(server.address) as ch:
        call = pb_grpc.InferenceStub(ch).ClassifyStream(
            messages(), metadata=(("authorization", f"Bearer {INFERENCE}"),), timeout=wait_s + 5)
        t0 = time.perf_counter()
        done = threading.Event()
        answered: list[float] = []

        def read() -> None:
            with contextlib.suppress(grpc.RpcError):
                next(call)
                answered.append(time.perf_counter() - t0)
            done.set()

        threading.Thread(target=read, daemon=True).start()
        done.wait(wait_s)
        requests.put(None)
        call.cancel()
        return f"{answered[0]:.2f} s" if answered else f"no answer in {wait_s:g} s"


def revoked_mid_stream(server: Server, after: int = 5) -> str:
    """A key revoked while its stream is open: one message sent before the revocation,
    ``after`` more sent 3 s after it, then the stream half-closed; the answers that came to
    those later messages, and how the stream ended."""
    with grpc.insecure_channel(server.address) as ch:
        admin = pb_grpc.AdminStub(ch)
        md = (("authorization", f"Bearer {REGISTRY}"),)
        made = admin.CreateKey(pb.CreateKeyRequest(tenant="default", scopes=["classify"]), metadata=md)
        one = pb.ClassifyRequest(task_id="sentiment", inputs=[pb.Input(text="a fine film")])
        revoked = threading.Event()

        def messages() -> Iterator[pb.ClassifyRequest]:
            yield one
            time.sleep(1.0)  # (the first message reaches the replica)
            admin.RevokeKey(pb.RevokeKeyRequest(key_id=made.info.key_id), metadata=md)
            revoked.set()
            time.sleep(3.0)  # the replicas' key caches follow the store within ~1 s
            yield from [one] * after

        answers, end = 0, "OK"
        try:
            for _ in pb_grpc.InferenceStub(ch).ClassifyStream(
                    messages(), metadata=(("authorization", f"Bearer {made.key}"),), timeout=60):
                answers += 1
        except grpc.RpcError as e:
            end = e.code().name
        late = max(0, answers - 1)  # answers past the one message sent before the revocation
        return f"{late} of {after} later messages answered; stream ended {end}"


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


def pct(xs: list[float], q: int) -> float:
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
    secs, status = post(server, MANY_INPUTS)
    rows.append(("HTTP POST, 580,000 inputs (7.2 MB), with a token", f"{status} in {secs:.2f} s"))
    loud, failed = under(server, seconds, many_inputs_loop(server), 1)
    rows.append(("other client, 1 client repeating it: p50 / p99 (ms)",
                 f"{pct(loud, 50):.0f} / {pct(loud, 99):.0f} ({len(loud)} calls, {failed} failed)"))
    slow, failed = under(server, seconds, slow_bodies(server), 1, timeout=20)
    rows.append(("other client, 2,100 stalled HTTP bodies: p50 / p99 (ms)",
                 f"{pct(slow, 50):.0f} / {pct(slow, 99):.0f} ({len(slow)} calls, {failed} failed "
                 "at 20 s)"))
    rows.append(("ClassifyStream, 1 message then wait: first answer after", stream_first_answer(server)))
    rows.append(("API key revoked while its stream is open", revoked_mid_stream(server)))
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
