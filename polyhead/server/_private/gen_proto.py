"""Generate the protobuf/gRPC Python code (polyhead/v1) from proto/: the one way to make it.

    python -m polyhead.server._private.gen_proto           # (re)write polyhead/v1/*_pb2*.py(i)
    python -m polyhead.server._private.gen_proto --check   # exit 1 if the committed code is stale
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PROTO_ROOT = REPO / "proto"  # the wire schema's source; the code goes to REPO/polyhead/v1
PROTOS = ("polyhead/v1/polyhead.proto",)
GENERATED = ("polyhead_pb2.py", "polyhead_pb2.pyi", "polyhead_pb2_grpc.py")  # .pyi: for mypy


def generate(out: Path = REPO) -> list[Path]:
    """Run protoc (grpcio-tools) over PROTOS, writing the generated modules under ``out``."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", f"--python_out={out}",
            f"--pyi_out={out}", f"--grpc_python_out={out}", *PROTOS]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {', '.join(PROTOS)}")
    return [out / Path(p).parent / name for p in PROTOS for name in GENERATED]


def stale_files() -> list[str]:
    """Generated files whose committed content differs from a fresh generation."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        stale = []
        for f in fresh:
            committed = REPO / f.relative_to(Path(tmp))
            if not committed.is_file() or not filecmp.cmp(f, committed, shallow=False):
                stale.append(str(committed))
        return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check the committed files")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for name in stale:
            print(f"stale: {name} (run `make proto`)", file=sys.stderr)
        return 1 if stale else 0
    for path in generate():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
