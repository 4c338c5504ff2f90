"""Planted bugs for what the robustness probe found in PEFT import (ImportPeft,
`polyhead store import-peft`): dropped weights, a 0-D classifier, faults blamed on the
backbone."""

from __future__ import annotations

from tests.mutants import Mutant

F = "polyhead/engine/peft_io.py"
P = "tests/test_peft_parity.py::"
RPC = "tests/test_publish_rpcs.py::test_import_peft_probe_statuses"

MUTANTS: list[Mutant] = [
    Mutant("probe-peft-unused-dropped", F,
           "    if unused:\n",
           "    if False:\n",
           (P + "test_peft_import_refuses_weights_it_would_drop[pooler]",
            P + "test_peft_import_refuses_weights_it_would_drop[lora-embedding]", RPC),
           "a modules_to_save pooler or lora_embedding_A/B imported OK and was never served"),
    Mutant("probe-peft-duplicate-overwrites", F,
           "        if name in slot:\n",
           "        if False:\n",
           (P + "test_peft_import_refuses_weights_it_would_drop[duplicate-lora]",),
           "two keys for one LoRA matrix: the later silently replaced the earlier"),
    Mutant("probe-peft-half-pair-zero-filled", F,
           "    if half:",
           "    if False:",
           (P + "test_peft_import_refuses_half_a_lora_pair",),
           "a lone lora_B (no lora_A) paired with zeros: imported, its weights lost"),
    Mutant("probe-peft-0d-classifier-internal", F,
           "        if t.dim() != len(dims):\n            raise _shape_error(entry, sizes)\n",
           "",
           (P + "test_peft_import_names_a_malformed_tensor[classifier-0d]", RPC),
           "a 0-D classifier weight ended in an exception the servicer maps to INTERNAL"),
    Mutant("probe-peft-all-blamed-on-backbone", F,
           "    if own and all(len(seen.get(d, ())) <= 1 for d in _BACKBONE_DIMS):\n",
           "    if True:\n",
           (P + "test_peft_import_names_a_malformed_tensor[in-dim]",
            P + "test_peft_import_names_a_malformed_tensor[rank-A]", RPC),
           "an input size of 385 against hidden 384 was FAILED_PRECONDITION 'peft_base_model'"),
    Mutant("probe-peft-rank-blamed-on-backbone", F,
           "    if own and all(",
           "    if all(",
           (P + "test_peft_import_names_a_malformed_tensor[rank-A]",
            P + "test_peft_import_names_a_malformed_tensor[rank-B]"),
           "rank 8 against r=4 in adapter_config.json was blamed on the backbone"),
    Mutant("probe-peft-other-backbone-invalid", F,
           "    if own and all(",
           "    if False and all(",
           (P + "test_peft_import_from_another_backbone_is_a_precondition",
            "tests/test_store.py::test_import_peft_refuses_other_base_shapes"),
           "an adapter trained on another backbone would be INVALID_ARGUMENT, not "
           "FAILED_PRECONDITION 'peft_base_model'"),
    Mutant("probe-peft-nan-unnamed", F,
           "        check_float(key, tensors[name])\n",
           "",
           (P + "test_peft_import_names_a_malformed_tensor[nan-B]", RPC),
           "NaN in lora_B reported without the adapter's tensor name"),
]
