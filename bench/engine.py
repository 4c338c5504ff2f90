"""Engine throughput on SST-2 dev sentences, batch 64, against the bare backbone and PEFT.

    python -m bench.engine --data ../shared/data/glue/SST-2/dev.tsv --clock cpu
    python -m bench.engine --data ... --geometry bert-base --device cuda --dtype bf16   # GPU

Mixed batches (section "mix"): (a) bare HF backbone, dataset order, naive padding (b) bare
HF backbone on the engine's length buckets (c) the engine, 64 tasks of all kinds in every
batch, sparse at the servable default of child-d and dps (5 % in whole input columns)
(cs: the same with sparse 1 % single weights; c5: 5 % single weights; cc: 1 % in whole
columns; c': without the sparse tasks)
(d) PEFT PeftModel with 32 LoRA adapters, adapter_names= mixed batches, same buckets
(e) the engine on PEFT's own 32 adapters. The engine runs as `polyhead serve` does: fp32
with its Linears prepacked (oneDNN) on a CPU, the allocator keeping freed memory
(--allocator; bench.engine_ab compares settings and commits), and the last layer run for
[CLS] alone (all a head reads; b'w is b' with the whole last layer); b'e is b' with eager
F.linear instead.
(b8, c8, cs8) b', c and cs with the backbone in int8 (--precision int8: Linear weights
int8, every task fp32; b8o, c8o: the same with the quantize/rescale around the int8
product op by op).
With onnxruntime installed
(`--ort on`, the default then): ONNX Runtime on the same bucketed batches, the bare backbone
exported, fp32 (ort) and ORT's dynamic int8 (ort8), and the same backbone cut as the engine
cuts its last layer (ortf, ortf8: the same work as the engine), each round in a process of
its own (bench.ort_peer); every row is also shown as a ratio to ORT fp32.
Distinct tasks ("kinds"): per kind, every row of that kind, 64 different tasks in each
batch of 64 against all rows of one task. Many tasks ("many"): 10,000 PASTA tasks resident,
rows of tasks drawn from all 10,000 against from 10; and the table bytes per task.
Rounds are interleaved (every run once per round) so that machine noise hits all alike;
`--clock cpu` times this thread's CPU work with 1 torch thread, for shared machines.
`--geometry bert-base|bert-large` runs a randomly initialised bert-base (12 x 768) or
bert-large (24 x 1024) instead of the packaged MiniLM (the same uncased vocabulary), e.g.
in bf16 on a GPU (`python -m bench.gpu` runs it and the serving benchmark in one go).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from polyhead.engine import Backbone, Engine, LoadedTask, TaskArtifact, load_backbone
from polyhead.engine.backbone import default_backbone_path
from polyhead.engine.encoder import BatchContext, Effect, Encoder
from polyhead.engine.engine import Encoded, plan_buckets
from polyhead.engine.lora import LoraConfig
from polyhead.engine.memory import keep_freed_memory
from polyhead.engine.precision import Int8Linears
from polyhead.engine.prefix import PrefixConfig
from polyhead.engine.sparse import SparseConfig

KINDS = [("pasta", None), ("prefix", PrefixConfig(num_prefix=16)), ("lora", LoraConfig(r=8)),
         ("bitfit", None), ("sparse", SparseConfig(density=0.01))]
SPARSE_COLUMNS = ("sparse", SparseConfig(density=0.01, structure="columns"))  # rows cc, cc8
KINDS_COLUMNS = [*KINDS[:4], SPARSE_COLUMNS]
# the sparse methods' servable default (child-d, dps: density 0.05 in whole columns): rows c, c8
KINDS_DEFAULT = [*KINDS[:4], ("sparse", SparseConfig(density=0.05, structure="columns"))]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
Runs = dict[str, Callable[[], object]]
Peers = dict[str, Callable[[], float]]  # one round in another process -> rows/s


def read_sst2(path: str, limit: int | None) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r["sentence"] for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    return rows[:limit] if limit else rows


def make_backbone(args: argparse.Namespace, tmp: Path) -> Backbone:
    """The backbone as `polyhead serve` loads it: fp32 with its Linears prepacked on a CPU."""
    if args.geometry == "minilm":
        if args.dtype == "fp32":
            return load_backbone(args.backbone, device=args.device, precision="fp32")
        return load_backbone(args.backbone, device=args.device, dtype=DTYPES[args.dtype])
    write_random_backbone(args.geometry, tmp)
    return load_backbone(tmp, device=args.device, dtype=DTYPES[args.dtype])


# BERT geometries for throughput on a GPU (weights do not change speed): layers, hidden, heads
GEOMETRIES = {"bert-base": (12, 768, 12), "bert-large": (24, 1024, 16)}


def write_random_backbone(geometry: str, folder: Path) -> Path:
    """A randomly initialised BERT of ``geometry`` (seed 0) with the packaged MiniLM's
    uncased vocabulary, saved as a Hugging Face folder that `polyhead serve --backbone`
    loads."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    layers, hidden, heads = GEOMETRIES[geometry]
    torch.manual_seed(0)
    config = BertConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                        intermediate_size=4 * hidden)
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(default_backbone_path(), local_files_only=True).save_pretrained(folder)
    return folder


def load_tasks(engine: Engine, kinds: Sequence[tuple[str, object]], n: int,
               seed: int = 0) -> list[LoadedTask]:
    spec = engine.spec
    return [engine.load(TaskArtifact.random(kinds[i % len(kinds)][0], spec, 2 + i % 3,
                                            config=kinds[i % len(kinds)][1], seed=seed + i))
            for i in range(n)]


def spread(tasks: Sequence[LoadedTask], buckets: list[list[int]], n: int) -> list[LoadedTask]:
    """Row -> task such that the j-th row in bucket order gets task j % len(tasks)."""
    out: list[LoadedTask] = [tasks[0]] * n
    for j, i in enumerate(i for b in buckets for i in b):
        out[i] = tasks[j % len(tasks)]
    return out


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

    from polyhead.engine.peft_io import artifact_from_peft

    return [artifact_from_peft(peft.get_peft_model_state_dict(model, adapter_name=f"a{i}"),
                               model.peft_config[f"a{i}"].to_dict(), spec) for i in range(n)]


def hf_batch(enc: Sequence[Encoded], engine: Engine) -> dict[str, torch.Tensor]:
    ids, mask, types = engine.pad(enc)
    return {"input_ids": ids, "attention_mask": mask.long(), "token_type_ids": types}


class WholeLastLayer(Encoder):
    """The engine's encoder as it ran before the first-token cut: every token through the
    last layer, the first one returned."""

    def forward(self, ctx: BatchContext, token_type_ids: torch.Tensor,
                effects: Sequence[Effect] = (), first_only: bool = False) -> torch.Tensor:
        return super().forward(ctx, token_type_ids, effects)[:, :1]


def mix_runs(bb: Backbone, enc: list[Encoded], buckets: list[list[int]],
             bb8: Backbone | None = None) -> Runs:
    engine = Engine(bb, max_batch_size=64)
    naive = [list(range(i, min(i + 64, len(enc)))) for i in range(0, len(enc), 64)]
    row_task = spread(load_tasks(engine, KINDS_DEFAULT, 64), buckets, len(enc))
    eng1 = Engine(bb, max_batch_size=64)
    row_task1 = spread(load_tasks(eng1, KINDS, 64), buckets, len(enc))
    int8 = int8_runs(bb8, enc, buckets) if bb8 is not None else {}
    eager = Engine(dataclasses.replace(bb, linears=None), max_batch_size=64)
    whole = Engine(bb, max_batch_size=64)
    whole.encoder = WholeLastLayer(bb)
    # separate engines: a table pads every slot to its largest task (5 % entries here)
    eng5 = Engine(bb, max_batch_size=64)
    kinds5 = [*KINDS[:4], ("sparse", SparseConfig(density=0.05))]
    row_task5 = spread(load_tasks(eng5, kinds5, 64), buckets, len(enc))
    eng_col = Engine(bb, max_batch_size=64)
    row_col = spread(load_tasks(eng_col, KINDS_COLUMNS, 64), buckets, len(enc))
    eng_dense = Engine(bb, max_batch_size=64)
    row_dense = spread(load_tasks(eng_dense, KINDS[:4], 51), buckets, len(enc))
    pm = peft_model(str(bb.path), 32).to(bb.device, bb.dtype)
    names = [f"a{j % 32}" for j in range(len(enc))]
    lora_tasks = [engine.load(a) for a in peft_artifacts(pm, bb.spec, 32)]
    row_lora = [lora_tasks[j % 32] for j in range(len(enc))]

    @torch.inference_mode()
    def bare(groups: list[list[int]]) -> None:
        for g in groups:
            bb.model(**hf_batch([enc[i] for i in g], engine))

    @torch.inference_mode()
    def peft_mixed() -> None:
        for g in buckets:
            pm(**hf_batch([enc[i] for i in g], engine), adapter_names=[names[i] for i in g])

    return {
        "a: bare backbone, naive padding": lambda: bare(naive),
        "b: bare backbone, engine buckets": lambda: bare(buckets),
        "b': engine, no task": lambda: engine.run_encoded(enc, [None] * len(enc)),
        "b'w: engine, no task, whole last layer (every token)":
            lambda: whole.run_encoded(enc, [None] * len(enc)),
        "b'e: engine, no task, eager F.linear (not prepacked)":
            lambda: eager.run_encoded(enc, [None] * len(enc)),
        "c: engine, 64 mixed tasks/batch, sparse at its default (5 % in whole columns)":
            lambda: engine.run_encoded(enc, row_task),
        "cs: the same, sparse 1 % single weights": lambda: eng1.run_encoded(enc, row_task1),
        "c5: the same, sparse 5 % single weights": lambda: eng5.run_encoded(enc, row_task5),
        "cc: the same, sparse 1 % in whole columns": lambda: eng_col.run_encoded(enc, row_col),
        "c': engine, 51 tasks/batch, no sparse": lambda: eng_dense.run_encoded(enc, row_dense),
        "d: PEFT, 32 LoRA, adapter_names": peft_mixed,
        "e: engine, the same 32 LoRA": lambda: engine.run_encoded(enc, row_lora),
        **int8,
    }


def int8_runs(bb8: Backbone, enc: list[Encoded], buckets: list[list[int]]) -> Runs:
    eng8 = Engine(bb8, max_batch_size=64)
    rows8 = spread(load_tasks(eng8, KINDS_DEFAULT, 64), buckets, len(enc))
    eng8s = Engine(bb8, max_batch_size=64)
    rows8s = spread(load_tasks(eng8s, KINDS, 64), buckets, len(enc))
    # the same, with the quantize and rescale around the int8 product run op by op (eager)
    # instead of as inductor's kernels: what int8 ran before, and runs without a C++ compiler
    eager = Int8Linears(bb8.model, compiled=False)
    eager.weights = bb8.linears.weights
    eng8o = Engine(dataclasses.replace(bb8, linears=eager), max_batch_size=64)
    rows8o = spread(load_tasks(eng8o, KINDS_DEFAULT, 64), buckets, len(enc))
    return {"b8: engine int8, no task": lambda: eng8.run_encoded(enc, [None] * len(enc)),
            "c8: engine int8, 64 mixed tasks/batch, sparse at its default":
                lambda: eng8.run_encoded(enc, rows8),
            "cs8: c8, sparse 1 % single weights": lambda: eng8s.run_encoded(enc, rows8s),
            "b8o: b8, quantize/rescale op by op": lambda: eng8o.run_encoded(enc, [None] * len(enc)),
            "c8o: c8, quantize/rescale op by op": lambda: eng8o.run_encoded(enc, rows8o)}


def ort_peers(bb: Backbone, enc: list[Encoded], buckets: list[list[int]], clock: str,
              tmp: Path, report: list[str]) -> Peers:
    """ONNX Runtime fp32 and int8 on the engine's batches, each round in its own process."""
    from bench import ort_peer

    engine = Engine(bb)
    batches = [{k: v.numpy() for k, v in hf_batch([enc[i] for i in g], engine).items()} for g in buckets]
    data = ort_peer.save_batches(batches, tmp / "batches.npz")
    fp32 = ort_peer.export(bb.model, tmp / "backbone.onnx")
    int8 = ort_peer.quantize(fp32, tmp / "backbone.int8.onnx")
    first = ort_peer.export_first_token(bb, tmp / "first.onnx")
    first8 = ort_peer.quantize(first, tmp / "first.int8.onnx")
    with torch.inference_mode():
        ref = bb.model(**hf_batch([enc[i] for i in buckets[0]], engine)).last_hidden_state[:, 0]
    models = {"fp32": fp32, "int8": int8, "fp32 first-token": first, "int8 first-token": first8}
    for name, model in models.items():
        cls = torch.tensor(ort_peer.measure(model, data, "wall", 0)["cls"])
        report.append(f"ORT {name} [CLS] vs torch fp32, first batch: max |diff| "
                      f"{(cls - ref).abs().max().item():.2e}")

    def rate(model: Path) -> Callable[[], float]:
        return lambda: float(ort_peer.measure(model, data, clock)["rows_per_s"])

    return {"ort: ONNX Runtime fp32, bare backbone": rate(fp32),
            "ort8: ONNX Runtime dynamic int8, bare backbone": rate(int8),
            "ortf: ORT fp32, the engine's first-token last layer": rate(first),
            "ortf8: ORT dynamic int8, first-token last layer": rate(first8)}


def kind_runs(bb: Backbone, enc: list[Encoded], buckets: list[list[int]]) -> Runs:
    runs: Runs = {}
    for label, kind in [*((k[0], k) for k in KINDS),
                        ("sparse columns", SPARSE_COLUMNS)]:
        engine = Engine(bb, max_batch_size=64)
        tasks = load_tasks(engine, [kind], 64, seed=100)
        many = spread(tasks, buckets, len(enc))
        one = [tasks[0]] * len(enc)
        runs[f"{label}: 64 tasks/batch"] = lambda e=engine, t=many: e.run_encoded(enc, t)
        runs[f"{label}: 1 task"] = lambda e=engine, t=one: e.run_encoded(enc, t)
    return runs


def many_runs(bb: Backbone, enc: list[Encoded], n: int, report: list[str]) -> Runs:
    engine = Engine(bb, max_batch_size=64)
    before = engine.tables.nbytes
    t0 = time.perf_counter()
    tasks = load_tasks(engine, [("pasta", None)], n, seed=1000)
    load_s = time.perf_counter() - t0
    rng = random.Random(0)
    wide = [tasks[rng.randrange(n)] for _ in enc]
    narrow = [tasks[rng.randrange(10)] for _ in enc]
    rows = tasks[0].nbytes
    report.append(f"{n} PASTA tasks resident: {rows} table bytes per task (its rows: vectors + "
                  f"head), tables allocated {(engine.tables.nbytes - before) / 2**20:.1f} MiB "
                  f"= {(engine.tables.nbytes - before) / n:.0f} bytes per task incl. free slots "
                  f"(capacity {engine.tables.kinds['pasta'].capacity}); loading took "
                  f"{load_s:.1f} s wall ({load_s / n * 1000:.2f} ms per task)")
    return {f"pasta: rows over {n} tasks": lambda: engine.run_encoded(enc, wide),
            "pasta: rows over 10 tasks": lambda: engine.run_encoded(enc, narrow)}


def measure(runs: Runs, rounds: int, clock: Callable[[], float], sync: Callable[[], None],
            rows: int, peers: Peers | None = None) -> dict[str, float]:
    """rows/s per run: median over rounds, runs (and peers, in their own processes)
    interleaved within each round."""
    def timed(fn: Callable[[], object]) -> float:
        sync()
        t0 = clock()
        fn()
        sync()
        return clock() - t0

    for fn in runs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    peer_rates: dict[str, list[float]] = {k: [] for k in peers or {}}
    for _ in range(rounds):
        for k, fn in runs.items():
            times[k].append(timed(fn))
        for k, peer in (peers or {}).items():
            peer_rates[k].append(peer())
    out = {k: rows / statistics.median(v) for k, v in times.items()}
    return out | {k: statistics.median(v) for k, v in peer_rates.items()}


def print_ratios(tput: dict[str, float]) -> None:
    def get(prefix: str) -> float:
        return next(v for k, v in tput.items() if k.startswith(prefix))

    if any(k.startswith("c:") for k in tput):
        b, c, c5, c2, d = get("b:"), get("c:"), get("c5:"), get("c':"), get("d:")
        b2, cc, cs = get("b':"), get("cc:"), get("cs:")
        print(f"\nc/b = {c / b:.3f} (target >= 0.95; against the engine's own bare row: c/b' = "
              f"{c / b2:.3f})   cs/b' = {cs / b2:.3f} (sparse 1 % single weights)   c5/b' = "
              f"{c5 / b2:.3f} (5 % single weights)   cc/b' = {cc / b2:.3f} (1 % in whole columns)"
              f"   c'/b' = {c2 / b2:.3f}   c/d = {c / d:.2f}   e/d = {get('e:') / d:.2f}"
              f"   b'/b = {b2 / b:.3f}")
    if any(k.startswith("c8:") for k in tput):
        b8, c8, bare_engine = get("b8:"), get("c8:"), get("b':")
        print(f"int8: b8/b' = {b8 / bare_engine:.3f}   c8/c = {c8 / get('c:'):.3f}   "
              f"c8/b8 = {c8 / b8:.3f}   b8/b8o = {b8 / get('b8o:'):.3f}   "
              f"c8/c8o = {c8 / get('c8o:'):.3f} (compiled quantize/rescale over op by op)")
    if any(k.startswith("ort8:") for k in tput):
        ort, ort8, ortf, ortf8 = get("ort:"), get("ort8:"), get("ortf:"), get("ortf8:")
        c = [v for k, v in tput.items() if k.startswith("c:")]
        whole = next((v for k, v in tput.items() if k.startswith("b'w:")), float("nan"))
        line = f"ORT: ort8/ort = {ort8 / ort:.3f}   ortf/ort = {ortf / ort:.3f}"
        if c:
            line += (f"   c/ort = {c[0] / ort:.3f} (target >= 1.0; sparse 1 % single weights: "
                     f"{get('cs:') / ort:.3f})   the same work as ORT: c/ortf = {c[0] / ortf:.3f}, "
                     f"cs/ortf = {get('cs:') / ortf:.3f}, b'w/ort = {whole / ort:.3f}")
        if any(k.startswith("c8:") for k in tput):
            line += (f"\n     c8/ort8 = {get('c8:') / ort8:.3f} (target >= 1.0; op by op: "
                     f"{get('c8o:') / ort8:.3f}; sparse 1 % single weights: {get('cs8:') / ort8:.3f})"
                     f"   b8/ort8 = {get('b8:') / ort8:.3f}   the same work as ORT: "
                     f"c8/ortf8 = {get('c8:') / ortf8:.3f}, cs8/ortf8 = {get('cs8:') / ortf8:.3f}, "
                     f"b8/ortf8 = {get('b8:') / ortf8:.3f}")
        print(line)
    for kind in [k for k, _ in KINDS] + ["sparse columns"]:
        if f"{kind}: 1 task" in tput:
            r = tput[f"{kind}: 64 tasks/batch"] / tput[f"{kind}: 1 task"]
            print(f"{kind}: 64 different tasks / 1 task = {r:.3f} (target within 0.95-1.05)")
    wide = [k for k in tput if k.startswith("pasta: rows over") and "10 tasks" not in k]
    if wide:
        r = tput[wide[0]] / tput["pasta: rows over 10 tasks"]
        print(f"{wide[0]} / over 10 tasks = {r:.3f} (target >= 0.95)")


def want_ort(flag: str | None) -> bool:
    if flag is not None:
        return flag == "on"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="SST-2 dev.tsv (GLUE format)")
    ap.add_argument("--backbone", default=None, help="local HF encoder folder (default: packaged MiniLM)")
    ap.add_argument("--geometry", choices=("minilm", *GEOMETRIES), default="minilm",
                    help="bert-base (12 x 768) or bert-large (24 x 1024): a randomly initialised "
                         "BERT (GPU runs)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N sentences")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sections", default="mix,kinds,many", help="any of mix, kinds, many")
    ap.add_argument("--many", type=int, default=10_000, help="PASTA tasks resident in 'many'")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                    help="int8: add the engine with an int8 backbone (rows b8, c8) beside fp32")
    ap.add_argument("--ort", choices=("on", "off"), default=None,
                    help="ONNX Runtime peers (default: on where onnxruntime is installed)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: this thread's CPU time with 1 torch thread -- the work done, "
                         "robust to other jobs on a shared machine (CPU runs only)")
    ap.add_argument("--allocator", choices=("keep", "system"), default="keep",
                    help="keep: freed memory stays in the process, as `polyhead serve`'s replicas "
                         "set it (polyhead.engine.memory; the default); system: glibc as it is")
    args = ap.parse_args(argv)
    if args.allocator == "keep":
        keep_freed_memory()
    if args.clock == "cpu":
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    with tempfile.TemporaryDirectory() as tmp:
        bb = make_backbone(args, Path(tmp))
        cuda = bb.device.type == "cuda"
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        enc = Engine(bb).tokenize(read_sst2(args.data, args.limit))
        buckets = plan_buckets([len(e.ids) for e in enc], 64)
        sections = set(args.sections.split(","))
        runs: Runs = {}
        report: list[str] = []
        peers: Peers = {}
        bb8 = load_backbone(args.backbone, precision="int8") if args.precision == "int8" else None
        if "mix" in sections:
            runs.update(mix_runs(bb, enc, buckets, bb8))
        if "mix" in sections and want_ort(args.ort) and not cuda:
            peers = ort_peers(bb, enc, buckets, args.clock, Path(tmp), report)
        if "kinds" in sections:
            runs.update(kind_runs(bb, enc, buckets))
        if "many" in sections:
            runs.update(many_runs(bb, enc, args.many, report))
        tput = measure(runs, args.rounds, clock, sync, len(enc), peers)
    pad_bucket = sum(len(g) * max(len(enc[i].ids) for i in g) for g in buckets)
    real = sum(len(e.ids) for e in enc)
    dev = torch.cuda.get_device_name() if cuda else "cpu"
    print(f"device={dev} dtype={bb.dtype} threads={torch.get_num_threads()} rows={len(enc)} "
          f"backbone={args.geometry}:{bb.spec.num_layers}x{bb.spec.hidden} rounds={args.rounds} "
          f"clock={args.clock}")
    print(f"padding efficiency of the buckets {real / pad_bucket:.2f} ({len(buckets)} forwards)")
    ort = next((v for k, v in tput.items() if k.startswith("ort:")), None)
    print("| run | seq/s | x ORT fp32 |\n|---|---:|---:|")
    for k, v in tput.items():
        print(f"| {k} | {v:.1f} | {f'{v / ort:.3f}' if ort else '-'} |")
    print_ratios(tput)
    for line in report:
        print(line)


if __name__ == "__main__":
    main()
