"""Engine throughput on SST-2 dev sentences, batch 64, against the bare backbone and PEFT.

    python -m bench.engine --data ../shared/data/glue/SST-2/dev.tsv

(a) bare HF backbone, dataset order, naive padding   (b) bare HF backbone on the engine's
length buckets   (c) the engine, 64 tasks of all kinds mixed in every batch   (d) PEFT
PeftModel with 32 LoRA adapters, adapter_names= mixed batches, on the same buckets.
Rounds are interleaved (a b c d a b c d ...) so that machine noise hits all alike;
`--clock cpu` times CPU work (1 thread) instead of wall time, for shared machines.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from methods import Engine, TaskArtifact, load_backbone
from methods.engine import Encoded, plan_buckets
from methods.lora import LoraConfig
from methods.prefix import PrefixConfig
from methods.sparse import SparseConfig

KINDS = [("pasta", None), ("prefix", PrefixConfig(num_prefix=16)), ("lora", LoraConfig(r=8)),
         ("bitfit", None), ("sparse", SparseConfig(density=0.01))]


def read_sst2(path: str, limit: int | None) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r["sentence"] for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    return rows[:limit] if limit else rows


def mixed_tasks(engine: Engine, n: int) -> list:
    spec = engine.spec
    return [engine.load(TaskArtifact.random(KINDS[i % len(KINDS)][0], spec, 2 + i % 3,
                                            config=KINDS[i % len(KINDS)][1], seed=i))
            for i in range(n)]


def peft_model(path: str, n_adapters: int):
    import peft
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, local_files_only=True)
    cfg = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"],
                          modules_to_save=["classifier"], task_type="SEQ_CLS")
    model = peft.get_peft_model(base, cfg, adapter_name="a0")
    for i in range(1, n_adapters):
        model.add_adapter(f"a{i}", cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    return model.eval()


def peft_artifacts(model, spec, n: int) -> list[TaskArtifact]:
    """The PEFT model's adapters as polyhead artifacts (same weights, same logits)."""
    import peft

    from methods.peft_io import artifact_from_peft

    return [artifact_from_peft(peft.get_peft_model_state_dict(model, adapter_name=f"a{i}"),
                               model.peft_config[f"a{i}"].to_dict(), spec) for i in range(n)]


def hf_batch(enc: Sequence[Encoded], engine: Engine) -> dict[str, torch.Tensor]:
    ids, mask, types = engine.pad(enc)
    return {"input_ids": ids, "attention_mask": mask.long(), "token_type_ids": types}


def timed(fn: Callable[[], object], clock: Callable[[], float]) -> float:
    t0 = clock()
    fn()
    return clock() - t0


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="SST-2 dev.tsv (GLUE format)")
    ap.add_argument("--backbone", default=None, help="local HF encoder folder (default: packaged MiniLM)")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N sentences")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: this thread's CPU time with 1 torch thread -- the work done, "
                         "robust to other jobs on a shared machine")
    args = ap.parse_args(argv)
    if args.clock == "cpu":
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    texts = read_sst2(args.data, args.limit)
    bb = load_backbone(args.backbone, device="auto")
    engine = Engine(bb, max_batch_size=64)
    enc = engine.tokenize(texts)
    naive = [list(range(i, min(i + 64, len(enc)))) for i in range(0, len(enc), 64)]
    buckets = plan_buckets([len(e.ids) for e in enc], 64)
    tasks64 = mixed_tasks(engine, 64)
    order = [i for b in buckets for i in b]  # row at sorted position j gets task j % 64
    row_task = [None] * len(enc)
    for j, i in enumerate(order):
        row_task[i] = tasks64[j % 64]
    dense_tasks = [t for t in tasks64 if t.kind.name != "sparse"]
    row_task_dense = [dense_tasks[j % len(dense_tasks)] for j in range(len(enc))]
    pm = peft_model(str(bb.path), 32).to(bb.device)
    names = [f"a{j % 32}" for j in range(len(enc))]
    lora_tasks = [engine.load(a) for a in peft_artifacts(pm, bb.spec, 32)]
    row_task_lora = [lora_tasks[j % 32] for j in range(len(enc))]

    @torch.inference_mode()
    def bare(groups: list[list[int]]) -> None:
        for g in groups:
            bb.model(**hf_batch([enc[i] for i in g], engine))

    @torch.inference_mode()
    def peft_mixed() -> None:
        for g in buckets:
            pm(**hf_batch([enc[i] for i in g], engine), adapter_names=[names[i] for i in g])

    runs: dict[str, Callable[[], object]] = {
        "a: bare backbone, naive padding": lambda: bare(naive),
        "b: bare backbone, engine buckets": lambda: bare(buckets),
        "b': engine, no task": lambda: engine.run_encoded(enc, [None] * len(enc)),
        "c: engine, 64 mixed tasks/batch": lambda: engine.run_encoded(enc, row_task),
        "c': engine, 64 tasks, no sparse": lambda: engine.run_encoded(enc, row_task_dense),
        "d: PEFT, 32 LoRA, adapter_names": peft_mixed,
        "e: engine, the same 32 LoRA": lambda: engine.run_encoded(enc, row_task_lora),
    }
    for fn in runs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for k, fn in runs.items():
            times[k].append(timed(fn, clock))
    tput = {k: len(enc) / statistics.median(v) for k, v in times.items()}
    pad_naive = sum(len(g) * max(len(enc[i].ids) for i in g) for g in naive)
    pad_bucket = sum(len(g) * max(len(enc[i].ids) for i in g) for g in buckets)
    real = sum(len(e.ids) for e in enc)
    print(f"device={bb.device} dtype={bb.dtype} threads={torch.get_num_threads()} "
          f"rows={len(enc)} backbone={bb.path.name} rounds={args.rounds} clock={args.clock}")
    print(f"padding efficiency: naive {real / pad_naive:.2f}, buckets {real / pad_bucket:.2f} "
          f"({len(buckets)} forwards)")
    print("| run | seq/s |\n|---|---:|")
    for k, v in tput.items():
        print(f"| {k} | {v:.1f} |")
    b, c, d = (next(v for k, v in tput.items() if k.startswith(p)) for p in ("b:", "c:", "d:"))
    c2 = tput["c': engine, 64 tasks, no sparse"]
    e, b2 = tput["e: engine, the same 32 LoRA"], tput["b': engine, no task"]
    print(f"e/d = {e / d:.2f} (the engine vs PEFT on the same 32 LoRA adapters)   b'/d = {b2 / d:.2f}")
    print(f"\nc/b = {c / b:.3f} (target >= 0.90)   c/d = {c / d:.2f} (target >= 1.3)   "
          f"c'/b = {c2 / b:.3f}   c'/d = {c2 / d:.2f}")


if __name__ == "__main__":
    main()
