"""Planted bugs in --precision (issue 29)."""

from tests.mutants import Mutant

MUTANTS = [
    Mutant(
        id="int8-one-scale-per-batch",
        file="polyhead/engine/precision.py",
        old="amax = torch.maximum(x2.amax(1, keepdim=True), x2.amin(1, keepdim=True).neg_())",
        new="amax = torch.maximum(x2.amax(), x2.amin().neg()).expand(x2.shape[0], 1).clone()",
        tests=("tests/test_precision.py::test_int8_rows_do_not_share_a_scale",),
        why="a per-batch activation scale makes a row's answer depend on its batchmates",
    ),
    Mutant(
        id="int8-path-ignored",
        file="polyhead/engine/encoder.py",
        old="if self.linears is not None and name in self.linears and not self.training:",
        new="if False:",
        tests=("tests/test_precision.py::test_int8_every_kind_mixed_within_bound_of_fp32",
               "tests/test_precision.py::test_int8_backbone_refuses_training"),
        why="--precision int8 accepted and reported while the backbone still runs fp32",
    ),
    Mutant(
        id="packed-fp32-drops-bias",
        file="polyhead/engine/precision.py",
        old='return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")',
        new='return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")',
        tests=("tests/test_precision.py::test_prepacked_fp32_equals_eager_for_every_kind",),
        why="the prepacked serving kernel diverging from the eager (training-time) Linear",
    ),
    Mutant(
        id="bf16-sparse-csr-on-cpu",
        file="polyhead/engine/sparse.py",
        old="self.csr_dtype = torch.float32 if bf16_cpu else ctx.dtype",
        new="self.csr_dtype = ctx.dtype",
        tests=("tests/test_precision.py::test_bf16_serves_every_kind_mixed_near_fp32",),
        why="--precision bf16 on a CPU crashed on any sparse task (no bf16 CSR product there)",
    ),
    Mutant(
        id="allocator-keeps-nothing",
        file="polyhead/engine/memory.py",
        old="M_MMAP_THRESHOLD: 1 << 30,",
        new="M_MMAP_THRESHOLD: 128 << 10,",
        tests=("tests/test_memory.py::test_freed_activations_are_reused_not_faulted_in_again",),
        why="the allocator setting applied but every large activation still unmapped when freed",
    ),
    Mutant(
        id="replica-allocator-unset",
        file="polyhead/server/_private/replica.py",
        old="        if config.keep_freed_memory:\n            keep_freed_memory()",
        new="        pass",
        tests=("tests/test_memory.py::test_the_replica_keeps_freed_memory_unless_told_not_to",),
        why="the replica serving with glibc's default allocator though its config keeps freed memory",
    ),
    Mutant(
        id="release-freed-memory-flag-ignored",
        file="polyhead/server/serve_cli.py",
        old="keep_freed_memory=not args.release_freed_memory,",
        new="keep_freed_memory=True,",
        tests=("tests/test_memory.py::test_the_replica_keeps_freed_memory_unless_told_not_to",),
        why="`polyhead serve --release-freed-memory` accepted and not applied",
    ),
]
