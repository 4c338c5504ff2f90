"""Options belong to their method (issue 26): a method's options dataclass, its flags and its
checks live in its own file; the kind's limits fail at parse time; a new method with one
option is one module plus one table entry (the toy method below, registered as the table
registers its own); the flat record and the training record keep the keys stored runs have."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from polyhead.cli import build_parser
from polyhead.engine import Backbone, load_backbone
from polyhead.trainer import Dataset, Example, TrainConfig, train
from polyhead.trainer.algos.lora import LoraOptions
from polyhead.trainer.algos.prefix import PrefixOptions
from polyhead.trainer.cli import train_config as _config
from polyhead.trainer.config import TrainConfigError
from polyhead.trainer.method import MethodOptions, TrainingMethod, option
from polyhead.trainer.table import METHODS, Defaults, Method, register_method
from tests.test_train import NEG, POS
from tests.tiny import make_bert

if TYPE_CHECKING:
    from polyhead.trainer.context import Context
    from polyhead.trainer.models import Trainable

QUIET = {"progress": False, "log_fn": lambda s: None}
REPO = Path(__file__).parent.parent


# -- the toy method: everything a new method with one option needs ---------------------------


@dataclasses.dataclass(frozen=True)
class ToyOptions(MethodOptions):
    toy_head_scale: float = option(1.0, "toy: the head's initial weights x this", type=float)

    def __post_init__(self) -> None:
        if not self.toy_head_scale >= 0:
            raise TrainConfigError(f"toy head scale must be >= 0, got {self.toy_head_scale}")


class Toy(TrainingMethod):
    """BitFit whose head starts at --toy-head-scale times its usual init."""

    options = ToyOptions

    def build(self, cfg: TrainConfig, ctx: Context) -> Trainable:
        from polyhead.engine.bitfit import BitfitConfig
        from polyhead.trainer.models import PetModel

        model = PetModel(ctx.backbone, cfg, ctx.head, BitfitConfig(), zero=True)
        scale = cfg.options_as(ToyOptions).toy_head_scale
        model.load_head({k: v * scale for k, v in model.head_tensors().items()})
        return model


HOOKS = Toy()
# the table entry (in polyhead/trainer/table.py's _ENTRIES it would be this line, algo="toy")
TOY = Method("toy", "bitfit", "toy: BitFit with a scaled head init",
             paper=Defaults(lr=1e-2, epochs=1, warmup=0.0), servable=Defaults(lr=1e-2, epochs=1, warmup=0.0),
             algo=__name__)


@pytest.fixture
def toy() -> Iterator[Method]:
    register_method(TOY)
    try:
        yield TOY
    finally:
        METHODS.pop("toy")


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Backbone:
    return load_backbone(make_bert(tmp_path_factory.mktemp("tiny-bert-options")))


@pytest.fixture(scope="module")
def sentiment() -> Dataset:
    rows = [Example(t, None, "positive") for t in POS] + [Example(t, None, "negative") for t in NEG]
    return Dataset(rows, ["negative", "positive"], "str")


def parse(*argv: str):  # type: ignore[no-untyped-def]
    return build_parser("train").parse_args(["train", *argv, "--train", "t.tsv", "--dev", "d.tsv",
                                             "--out", "x.polyhead"])


def test_a_new_method_with_one_option_is_one_module_and_one_table_entry(
        toy: Method, bert: Backbone, sentiment: Dataset, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser("train").parse_args(["train", "--help"])
    help_text = capsys.readouterr().out
    assert "toy options:\n  --toy-head-scale TOY_HEAD_SCALE" in help_text
    assert "  toy      toy: BitFit" in help_text
    cfg = _config(parse("--method", "toy", "--toy-head-scale", "0", "--epochs", "1", "--batch-size", "8",
                        "--max-train", "16", "--precision", "fp32"))
    assert cfg.options == ToyOptions(toy_head_scale=0.0)
    with pytest.raises(TrainConfigError, match="toy head scale must be >= 0"):
        _config(parse("--method", "toy", "--toy-head-scale", "-1"))
    with pytest.raises(TrainConfigError, match="--toy-head-scale applies to --method toy, not pasta"):
        _config(parse("--method", "pasta", "--toy-head-scale", "2"))
    with pytest.raises(ValueError, match="already registered"):
        register_method(TOY)
    # its option reaches its model: a zero head, where the default scale gives the usual one
    from polyhead.trainer.run import train as run_train

    res = run_train(cfg, bert, sentiment, sentiment, "accuracy", **QUIET)  # 16 rows, batch 8: 2 steps
    assert res.training.steps == 2 and res.artifact is not None and res.artifact.kind == "bitfit"
    assert res.training.hyperparameters["toy_head_scale"] == 0.0 and res.parity is not None
    start = {s: METHODS["toy"].build(TrainConfig(method="toy", options=ToyOptions(s)),
                                     _ctx(bert, sentiment, cfg)).head_tensors()["head.weight"]
             for s in (0.0, 1.0)}
    assert not start[0.0].any() and start[1.0].any()


def _ctx(bert: Backbone, data: Dataset, cfg: TrainConfig):  # type: ignore[no-untyped-def]
    from polyhead.engine import HeadConfig
    from polyhead.trainer.context import Context
    from polyhead.trainer.loop import encode

    enc = encode(bert.tokenizer, data, cfg.max_length)
    return Context(bert, enc, enc, HeadConfig(num_outputs=2, type="pooler"), "accuracy", False, 10)


# -- the kind's limits, at parse time --------------------------------------------------------


def test_a_lora_rank_over_the_kinds_limit_fails_when_the_flags_are_parsed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`--lora-r 1000` trained fully and was refused at export; now one line, before any
    training, from the lora kind's own limit (LoraConfig: up to 512)."""
    import polyhead.trainer.run as run
    from polyhead.cli import main

    data = tmp_path / "d.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"{t}\tpositive\n" for t in POS))
    monkeypatch.setattr(run, "train", lambda *a, **k: pytest.fail("training started"))
    rc = main(["train", "--method", "lora", "--lora-r", "1000", "--train", str(data), "--dev", str(data),
               "--out", str(tmp_path / "x.polyhead")])
    err = capsys.readouterr().err
    assert rc == 2 and err.splitlines() == [
        "polyhead train: error: --lora-r/--lora-alpha: LoraConfig: r must be in [1, 512], got 1000"]
    assert _config(parse("--method", "lora", "--lora-r", "512")).options == LoraOptions(lora_r=512)
    with pytest.raises(TrainConfigError, match="--num-prefix: PrefixConfig: num_prefix must be an int in"):
        _config(parse("--method", "prefix", "--num-prefix", "257"))
    with pytest.raises(TrainConfigError, match="--density/--mask-structure: SparseConfig: density"):
        _config(parse("--method", "dps", "--density", "1.5"))


def test_another_methods_flag_is_refused_by_name() -> None:
    with pytest.raises(TrainConfigError, match=r"--density applies to --method child-d \| child-f \| dps"):
        _config(parse("--method", "pasta", "--density", "0.2"))
    with pytest.raises(TrainConfigError, match="--lora-r applies to --method lora, not full"):
        _config(parse("--method", "full", "--lora-r", "4"))
    # --head-init pet:lora's stage 1 is LoRA: its flags apply there
    cfg = _config(parse("--method", "full", "--recipe", "paper", "--head-init", "pet:lora", "--lora-r", "4"))
    assert cfg.head_init_options == LoraOptions(lora_r=4) and cfg.to_dict()["lora_r"] == 4


# -- each method's option reaches what it sets -----------------------------------------------


def test_prefix_length_reaches_the_model(bert: Backbone, sentiment: Dataset) -> None:
    cfg = TrainConfig(method="prefix", options=PrefixOptions(num_prefix=3))
    model = METHODS["prefix"].build(cfg, _ctx(bert, sentiment, cfg))
    art = model.export()
    assert art.config.num_prefix == 3  # type: ignore[attr-defined]


def test_lora_rank_reaches_peft_and_the_head_init_stage(bert: Backbone, sentiment: Dataset,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from polyhead.trainer.models import LoraModel

    cfg = TrainConfig(method="lora", options=LoraOptions(lora_r=4, lora_alpha=8.0))
    model = METHODS["lora"].build(cfg, _ctx(bert, sentiment, cfg))
    assert isinstance(model, LoraModel) and (model.peft_config.r, model.peft_config.lora_alpha) == (4, 8.0)
    ranks: list[int] = []
    real_init = LoraModel.__init__

    def init(self, *a, **k):  # type: ignore[no-untyped-def]
        real_init(self, *a, **k)
        ranks.append(self.peft_config.r)

    monkeypatch.setattr(LoraModel, "__init__", init)
    full = TrainConfig(method="full", recipe="paper", epochs=1, batch_size=8, head_init="pet:lora",
                       head_init_options=LoraOptions(lora_r=2), precision="fp32")
    train(full, bert, sentiment, sentiment, "accuracy", export=False, **QUIET)
    assert ranks == [2]  # stage 1's LoRA, at --lora-r


# -- the records keep their keys ---------------------------------------------------------------


def test_the_flat_record_keeps_the_stored_runs_keys() -> None:
    """The study's records (bench/results/accuracy.jsonl) and manifests hold every method's
    option keys, flat; a record's run rebuilt from its keys gives the same record."""
    lines = (REPO / "bench/results/accuracy.jsonl").read_text().splitlines()
    stored = json.loads(lines[-2])["config"]  # a recent run (the study appends the last line now and then)
    for method in METHODS:
        recipe = METHODS[method].recipes[0]
        assert set(TrainConfig(method=method, recipe=recipe).to_dict()) == set(stored), method
    keys = {k: v for k, v in stored.items() if k not in ("adam_betas", "adam_eps", "max_grad_norm")}
    again = TrainConfig.flat(**keys, device="auto").to_dict()
    assert json.loads(json.dumps(again)) == stored


def test_the_training_record_writes_the_keys_manifests_hold(bert: Backbone, sentiment: Dataset) -> None:
    cfg = TrainConfig(method="child-f", epochs=1, batch_size=8, precision="fp32")
    res = train(cfg, bert, sentiment, sentiment, "accuracy", **QUIET)
    assert set(res.training.to_json()) == {
        "method", "recipe", "method_label", "hyperparameters", "train_examples", "dev_examples",
        "total_steps", "dropout_in_training", "precision", "steps", "dev_history", "train_seconds",
        "train_tokens", "tokens_per_s", "padding_share", "sparsify", "trainable_params",
        "stored_params", "parity_max_abs"}
    eh = TrainConfig(method="eh-ft", recipe="paper", epochs=1, batch_size=8, head_init="pet:bitfit",
                     precision="fp32")
    stage = train(eh, bert, sentiment, sentiment, "accuracy", export=False, **QUIET).training.to_json()
    assert set(stage["head_init_stage"]) == {"method", "steps", "epochs", "lr", "dev", "trainable_params",
                                             "seconds"}
    assert stage["steps"] > 0 and stage["head_init_stage"]["method"] == "bitfit"
