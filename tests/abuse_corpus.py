"""The abuse probe's cases (issue 30; no tests here), as tests/reliability_corpus.py keeps the
hostile artifacts: what a client may send that must be refused cheaply, by name, never with
a 500 / INTERNAL or a traceback. Each list is (name, payload[, what the refusal names])."""

from __future__ import annotations

import json
from typing import Any

MB = 1 << 20

# B1: bodies of POST /v1/classify that are not a ClassifyRequest as JSON (all -> 400).
HTTP_BODIES: list[tuple[str, bytes]] = [
    ("null", b"null"),
    ("number", b"123"),
    ("true", b"true"),
    ("string", b'"sentiment"'),
    ("list", b'[{"task_id": "sentiment"}]'),
    ("nested_lists", b"[" * 100_000),  # json.loads: RecursionError
    ("nested_objects", b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
    ("empty", b""),
    ("not_json", b"{not json"),
    ("bad_utf8", b'{"task_id": "\xff\xfe"}'),
    ("task_id_number", b'{"task_id": 5, "inputs": [{"text": "x"}]}'),
    ("task_id_object", b'{"task_id": {"x": 1}, "inputs": [{"text": "x"}]}'),
    ("inputs_string", b'{"task_id": "sentiment", "inputs": "x"}'),
    ("inputs_null_item", b'{"task_id": "sentiment", "inputs": [null]}'),
    ("text_list", b'{"task_id": "sentiment", "inputs": [{"text": ["x"]}]}'),
    ("unknown_field", b'{"task_id": "sentiment", "color": "red"}'),
    ("version_number", b'{"task_id": "sentiment", "version": 3, "inputs": [{"text": "x"}]}'),
    ("huge_int", b'{"task_id": "sentiment", "inputs": [{"text": "x"}], "version": '
     + b"9" * 5000 + b"}"),
]

# B3 and PEFT meaning: adapter_config.json fields (merged into a good config) that must be
# refused as INVALID_ARGUMENT naming the field. Values are JSON text, so 1e400 stays itself.
PEFT_CONFIGS: list[tuple[str, str, str]] = [
    ("r_string", '"r": "abc"', "r"),
    ("r_null", '"r": null', "r"),
    ("r_list", '"r": [8]', "r"),
    ("r_1e400", '"r": 1e400', "r"),
    ("r_fraction", '"r": 8.7', "r"),
    ("r_zero", '"r": 0', "r"),
    ("r_bool", '"r": true', "r"),
    ("alpha_string", '"lora_alpha": "x"', "lora_alpha"),
    ("alpha_null", '"lora_alpha": null', "lora_alpha"),
    ("alpha_1e400", '"lora_alpha": 1e400', "lora_alpha"),
    ("alpha_negative", '"lora_alpha": -8', "lora_alpha"),
    ("alpha_1e30", '"lora_alpha": 1e30', "lora_alpha"),  # B5 at import: a finite NaN-maker
    ("rslora_string", '"use_rslora": "yes"', "use_rslora"),
    ("targets_unknown", '"target_modules": ["query", "nonsense"]', "target_modules"),
    ("targets_number", '"target_modules": 5', "target_modules"),
    ("targets_bad_regex", '"target_modules": "(("', "target_modules"),
    ("base_model_long", '"base_model_name_or_path": "' + "m" * 1000 + '"', "base_model"),
    ("base_model_control", '"base_model_name_or_path": "a\\nb"', "base_model"),
]

# B2: version strings that cannot name a version (refused before any lookup).
BAD_VERSIONS: list[tuple[str, str]] = [
    ("one_mb", "000001" + "x" * MB),
    ("65_chars", "a" * 65),
    ("slash", "../latest"),
    ("space", "v 1"),
    ("nul", "latest\x00"),
    ("newline", "latest\nv2"),
    ("unicode", "lätest"),
]

# B6: strings at entry: (name, field, value) refused INVALID_ARGUMENT with a short message.
BAD_ALIASES: list[tuple[str, str]] = [
    ("one_mb", "a" * MB),
    ("newline", "prod\nlatest"),
    ("nul", "prod\x00"),
]
BAD_LABELS: list[tuple[str, list[str]]] = [
    ("nul", ["neg\x00", "pos"]),
    ("newline", ["neg\nINFO forged log line", "pos"]),
    ("escape", ["neg\x1b[31m", "pos"]),
    ("too_long", ["n" * 257, "pos"]),
]
BAD_MANIFEST_TEXT: list[tuple[str, str, Any]] = [
    ("created_at_1mb", "created_at", "2026-01-01T00:00:00" + "0" * MB),
    ("created_at_newline", "created_at", "2026-01-01\nforged"),
    ("base_model_5mb", "training.base_model", "m" * (5 * MB)),
    ("method_nul", "training.method", "pasta\x00"),
]


def peft_config(extra: str = "") -> bytes:
    """A good adapter_config.json for tests.test_abuse's tiny adapter, with ``extra`` fields
    (JSON text, overriding) merged in."""
    base = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["query", "value"],
            "modules_to_save": ["classifier"], "task_type": "SEQ_CLS", "bias": "none"}
    text = json.dumps(base)
    return (text[:-1] + (", " + extra if extra else "") + "}").encode()
