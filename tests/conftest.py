from __future__ import annotations

import os
from pathlib import Path

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
