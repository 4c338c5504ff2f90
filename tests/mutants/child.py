"""One mutant's pytest run, forked from a server that has the heavy libraries loaded.

``python -m tests.mutants`` starts a multiprocessing forkserver that imports ``PRELOAD``
(and this module) once (torch, transformers, scikit-learn, ...: ~80% of a test run's start-up); each mutant
runs ``run`` in a process forked from it. Only third-party modules are preloaded: the
repository's own packages (and ``tests``) are dropped from ``sys.modules`` and the copy is
put first on ``sys.path``, so the copy's modules are the ones imported (the guard plugin
checks it).
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
from collections.abc import Sequence

OURS = ("polyhead", "bench", "tests")
PRELOAD = ("torch", "numpy", "scipy.optimize", "scipy.stats", "sklearn.metrics",
           "transformers", "transformers.activations", "transformers.modeling_utils",
           "transformers.loss.loss_utils", "transformers.models.bert.modeling_bert",
           "transformers.models.roberta.modeling_roberta", "tokenizers", "safetensors.torch",
           "grpc", "google.protobuf", "psutil", "pytest", "_pytest.python", "ray", "ray.serve",
           "fastapi", "starlette", "hypothesis", "psycopg", "yaml")


def run(tree: str, args: Sequence[str], env: dict[str, str], log: str) -> None:
    """pytest ``args`` in ``tree`` (this process exits with pytest's code), output to ``log``."""
    # The preloaded libraries' objects never become garbage here: frozen, no collection
    # scans them (pytest alone runs two full collections at exit, 0.5 s a run unfrozen).
    gc.freeze()
    # tqdm's first bar makes a multiprocessing lock, a named semaphore, which a run ending in
    # os._exit leaves behind (multiprocessing's tracker then warned of ~100 "leaked
    # semaphore objects" at the end of `make test`); a run is one process: a thread lock
    import threading

    import tqdm

    tqdm.tqdm.set_lock(threading.RLock())
    for name in [m for m in sys.modules if m.split(".")[0] in OURS]:
        del sys.modules[name]
    roots = {os.path.realpath(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))}
    sys.path[:] = [tree, *(p for p in sys.path if os.path.realpath(p or os.getcwd()) not in roots)]
    importlib.invalidate_caches()
    os.chdir(tree)
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    import pytest

    rc = int(pytest.main(list(args)))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)
