"""The client over TLS, as it reaches a cluster through a Gateway/Ingress that terminates TLS:
a real gRPC server with a certificate from a test CA (made here with `cryptography`), the
Python client and the `polyhead` CLI with --tls/--ca; the token travels only inside TLS."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from polyhead.cli import main
from polyhead.client import PolyheadClient, PolyheadError
from polyhead.client_cli import _is_loopback
from polyhead.v1 import polyhead_pb2 as pb
from polyhead.v1 import polyhead_pb2_grpc as pb_grpc

TOKEN = "tls-test-token"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey,
          *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem(obj: x509.Certificate | ec.EllipticCurvePrivateKey) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class Inference(pb_grpc.InferenceServicer):
    def Health(self, request: pb.HealthRequest, context: grpc.ServicerContext) -> pb.HealthResponse:
        return pb.HealthResponse(status="SERVING", replica="behind-tls")


class Registry(pb_grpc.RegistryServicer):
    def __init__(self) -> None:
        self.seen_tokens: list[str] = []

    def ListTasks(self, request: pb.ListTasksRequest, context: grpc.ServicerContext) -> pb.ListTasksResponse:
        auth = dict(context.invocation_metadata()).get("authorization", "")
        self.seen_tokens.append(auth)
        if auth != f"Bearer {TOKEN}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token")
        latest = pb.VersionInfo(task_id="sst2", version="ab" * 32, number=3, kind="pasta")
        return pb.ListTasksResponse(tasks=[pb.TaskInfo(task_id="sst2", kind="pasta", latest=latest,
                                                       num_versions=3)])


@dataclass
class TlsServer:
    address: str
    ca_file: Path
    registry: Registry


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    folder = tmp_path_factory.mktemp("tls")
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert("polyhead test CA", ca_key, "polyhead test CA", ca_key, ca=True)
    cert = _cert("localhost", key, "polyhead test CA", ca_key, ca=False)
    (folder / "ca.pem").write_bytes(_pem(ca))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    registry = Registry()
    pb_grpc.add_InferenceServicer_to_server(Inference(), server)
    pb_grpc.add_RegistryServicer_to_server(registry, server)
    creds = grpc.ssl_server_credentials([(_pem(key), _pem(cert))])
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    try:
        yield TlsServer(f"localhost:{port}", folder / "ca.pem", registry)
    finally:
        server.stop(grace=None)


def test_client_checks_the_server_against_the_ca(tls_server: TlsServer) -> None:
    with PolyheadClient(tls_server.address, TOKEN, ca=tls_server.ca_file) as client:
        assert client.tls
        assert client.health()["replica"] == "behind-tls"
        assert [t["task_id"] for t in client.list_tasks()] == ["sst2"]
    assert tls_server.registry.seen_tokens[-1] == f"Bearer {TOKEN}"
    with PolyheadClient(tls_server.address, TOKEN, ca=tls_server.ca_file.read_bytes()) as client:
        assert client.health()["status"] == "SERVING"


def test_unknown_ca_or_plaintext_is_refused(tls_server: TlsServer) -> None:
    calls = len(tls_server.registry.seen_tokens)
    # the system's roots do not know the test CA: the handshake fails, no RPC arrives
    with PolyheadClient(tls_server.address, TOKEN, tls=True, retries=0, timeout_s=10) as client, \
            pytest.raises(PolyheadError) as e:
        client.list_tasks()
    assert e.value.code == grpc.StatusCode.UNAVAILABLE
    with PolyheadClient(tls_server.address, TOKEN, retries=0, timeout_s=10) as client, \
            pytest.raises(PolyheadError) as e:
        client.list_tasks()
    assert e.value.code == grpc.StatusCode.UNAVAILABLE
    assert len(tls_server.registry.seen_tokens) == calls  # the token never reached the server


def test_cli_tls_flags(tls_server: TlsServer, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["tasks", "list", "--server", tls_server.address, "--token", TOKEN]
    assert main([*argv, "--ca", str(tls_server.ca_file)]) == 0
    assert capsys.readouterr().out.startswith("sst2\tpasta\tv3\t")


def test_cli_bad_ca_file_names_it(tls_server: TlsServer, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["tasks", "list", "--server", tls_server.address, "--token", TOKEN]
    assert main([*argv, "--ca", str(tmp_path / "missing.pem")]) == 2
    assert f"CA file {tmp_path / 'missing.pem'}: cannot read it" in capsys.readouterr().err
    (tmp_path / "empty.pem").write_text("not a certificate\n")
    assert main([*argv, "--ca", str(tmp_path / "empty.pem")]) == 2
    assert "no PEM certificate" in capsys.readouterr().err


def test_cleartext_token_warning_only_off_loopback() -> None:
    assert _is_loopback("localhost:9000") and _is_loopback("127.0.0.1:9000") and _is_loopback("[::1]:9000")
    assert not _is_loopback("polyhead.example.com:443") and not _is_loopback("10.0.0.7:9000")
