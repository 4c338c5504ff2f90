from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One intra-op thread: the tests' models are tiny, and on a 2-core machine shared with other
# work (a training study, another suite) a second OpenMP thread spins waiting for a core
# and makes every forward ~100x slower. Processes the tests start inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from polyhead.engine import Engine, load_backbone
from tests.test_store_support import pg_server  # noqa: F401  (one PostgreSQL for the session)
from tests.tiny import make_bert, make_roberta

torch.set_num_threads(1)
# The libraries loaded above never become garbage: frozen, the collector's full passes
# (and pytest's two at exit) no longer scan their objects in every process of the suite.
gc.freeze()

# `make test` runs the suite in pytest-xdist workers (`-n 3 --dist loadfile`): each module
# is one unit of work, so its module-scoped fixtures (Ray, `polyhead serve`, a training
# run) start once, in one worker. Here loadfile's units are changed in one way: the modules
# that start Ray in the test process are one unit, run one after another in one worker (two
# in-process Ray sessions at once would each claim the machine's 2 CPUs). (xdist's own
# `--dist loadgroup` does not group under pytest 9: it renames `item._nodeid`, which pytest
# 9's `nodeid` no longer reads.) Units go out longest first, so that no long one starts
# last; the rest follow in collection order. Seconds: one process, pytest --durations,
# 2026-12-07, beside other work.
RAY_IN_PROCESS = frozenset({"test_reliability", "test_reliability_faults", "test_serving",
                            "test_serving_path", "test_store_replicas"})
LONGEST_FIRST = (
    "ray",  # 356 s: the five modules above
    "test_jobs_serve",  # 140 s: `polyhead serve` started twice, training jobs
    "test_store",  # 106 s: processes publishing to one store
    "test_cluster",  # a two-node Ray cluster in subprocesses
    "test_readme",  # 71 s: the README's tour against `polyhead serve`
    "test_client_install",  # 60 s: a wheel built and installed; `polyhead serve`
    "test_jobs_cluster",  # a two-node Ray cluster in subprocesses
    "test_replica_memory",  # 44 s: 600 cycles
    "test_polyhead_serve",  # 37 s
    "test_store_crash",  # 37 s: SIGKILLed publishers
    "test_serve_deploy",  # 31 s
)


def xdist_unit(nodeid: str) -> str:
    module = nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py")
    return "ray" if module in RAY_IN_PROCESS else module


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist; without it, never called
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class Units(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_unit(nodeid)

    config.option.loadscopereorder = False  # the order below, not by number of tests
    return Units(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In an xdist worker, the long units first (every worker collects the same order)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        rank = {unit: i for i, unit in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(xdist_unit(item.nodeid), len(rank)))  # stable


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_roberta_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_roberta(tmp_path_factory.mktemp("tiny-roberta"))


@pytest.fixture(scope="session")
def tiny_bert(tiny_bert_dir: Path):
    return load_backbone(tiny_bert_dir)


@pytest.fixture(scope="session")
def tiny_roberta(tiny_roberta_dir: Path):
    return load_backbone(tiny_roberta_dir)


@pytest.fixture(scope="session")
def real_backbone():
    return load_backbone()


@pytest.fixture(scope="session")
def tiny_engine(tiny_bert) -> Engine:
    return Engine(tiny_bert, max_batch_size=16)
