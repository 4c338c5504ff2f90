"""The serving allocator (polyhead.engine.memory): freed activations stay in the process."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

# a fresh process (the test's own allocator stays as it is): page faults per allocate,
# touch and free of a 48 MB tensor, as a forward's largest activations are
PROBE = """
import json, resource, sys, torch
from polyhead.engine.memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
n = 48 * (1 << 20) // 4
t = torch.empty(n); t.fill_(1.0); del t
f0 = faults()
for _ in range(20):
    t = torch.empty(n); t.fill_(1.0); del t
print(json.dumps({"kept": kept, "again": keep_freed_memory() if kept else None,
                  "faults": (faults() - f0) / 20}))
"""


def probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_freed_activations_are_reused_not_faulted_in_again() -> None:
    """glibc unmaps a freed 48 MB block (12,288 pages to fault in on each next use); once
    the allocator keeps freed memory, the block is mostly reused in place (measured: 614 or
    3,686 faults a cycle, the heap still growing in some of the first cycles)."""
    system, kept = probe("system"), probe("keep")
    assert kept["kept"] is True and kept["again"] is True
    pages = 48 * (1 << 20) // 4096
    assert system["faults"] > pages / 2  # the default: every cycle faults the block in again
    assert kept["faults"] < system["faults"] / 2


@pytest.mark.parametrize("keep", [True, False])
def test_the_replica_keeps_freed_memory_unless_told_not_to(keep, tiny_bert_dir, tmp_path,
                                                          monkeypatch) -> None:
    """The Serve replica sets its allocator at start (``keep_freed_memory``, the default);
    `polyhead serve --release-freed-memory` (``keep_freed_memory: false``) leaves glibc's."""
    import asyncio

    import polyhead.server._private.replica as replica_mod
    from polyhead.cli import build_parser
    from polyhead.server.config import ServerConfig
    from polyhead.server.serve_cli import config_from
    from tests.test_replica_memory import in_process_replica

    monkeypatch.setenv("RAY_ENABLE_AUTO_CONNECT", "0")
    calls: list[bool] = []
    monkeypatch.setattr(replica_mod, "keep_freed_memory", lambda: calls.append(True) or True)
    config = ServerConfig(store=str(tmp_path / "store"), backbone=str(tiny_bert_dir), insecure=True,
                          seed_examples=False, torch_threads=1, keep_freed_memory=keep)
    asyncio.run(in_process_replica(config))
    assert calls == ([True] if keep else [])
    flags = ["serve", "--insecure"] + ([] if keep else ["--release-freed-memory"])
    assert config_from(build_parser("serve").parse_args(flags)).keep_freed_memory is keep
