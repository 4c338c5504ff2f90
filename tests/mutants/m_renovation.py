"""Planted bugs for issue 26's renovations on the serving side: the bank's one load path,
the validated artifact type, the batcher's counters, the folded twins."""

from __future__ import annotations

from tests.mutants import Mutant

U = "tests/test_serve_units.py::"
V = "tests/test_artifacts_v1.py::"

MUTANTS: list[Mutant] = [
    Mutant("bank-load-on-event-loop", "polyhead/server/bank.py",
           "                return await self._off_loop(self._loader.load, artifact)\n",
           "                return self._loader.load(artifact)\n",
           (U + "test_bank_loads_every_version_off_the_event_loop",),
           "the bank's put wrote the engine's tables on the event loop (every request waited)"),
    Mutant("bank-put-reads-the-store-again", "polyhead/server/bank.py",
           "        return await self._resident(key, (artifact, meta))\n",
           "        return await self._resident(key)\n",
           (U + "test_bank_loads_every_version_off_the_event_loop",),
           "a publish was read back from the store although the store had just decoded it"),
    Mutant("engine-checks-decoded-artifact-again", "polyhead/engine/engine.py",
           "return self.tables.load(artifact.checked(self.spec), over_budget)",
           "return self.tables.load(TaskArtifact.checked(artifact, self.spec), over_budget)",
           (V + "test_decoded_artifact_is_checked_once",),
           "Engine.load validated again what decode_artifact had validated"),
    Mutant("engine-skips-check-of-unchecked-artifact", "polyhead/engine/engine.py",
           "return self.tables.load(artifact.checked(self.spec), over_budget)",
           "return self.tables.load(artifact, over_budget)  # type: ignore[arg-type]",
           (V + "test_decoded_artifact_is_checked_once",),
           "an artifact nobody checked went into the slot tables"),
    Mutant("valid-artifact-trusted-for-any-backbone", "polyhead/engine/artifact.py",
           "return self if self.fingerprint == spec.fingerprint else super().checked(spec)",
           "return self",
           (V + "test_decoded_artifact_is_checked_once",),
           "an artifact checked against one backbone was loaded unchecked into another"),
    Mutant("decode-skips-backbone-check", "polyhead/store/fileformat.py",
           "        return artifact.checked(spec)\n",
           "        return ValidArtifact(artifact.kind, artifact.config, artifact.head, "
           "artifact.tensors,\n                             fingerprint=spec.fingerprint)\n",
           ("tests/test_store_format.py::test_bad_file_is_refused_by_name",),
           "the validated type was made without the check it stands for"),
    Mutant("batch-counters-not-counted", "polyhead/server/_private/batcher.py",
           "            self.counters.add(stats)\n", "",
           (U + "test_batcher_hands_each_request_its_own_rows",),
           "Health reported 0 batches and rows"),
    Mutant("alias-check-dropped", "polyhead/store/catalog.py",
           "        check_alias(alias)\n", "",
           ("tests/test_abuse.py::test_set_alias_with_a_bad_alias_is_a_short_invalid_argument",),
           "a name that reads as a version was accepted as an alias"),
    Mutant("padding-masks-the-pad", "polyhead/engine/engine.py",
           "        mask[i, :len(r)] = 1\n", "        mask[i, :] = 1\n",
           (V + "test_v1_artifact_serves_its_recorded_logits",),
           "padded positions were attended to (rows of unequal length in one batch)"),
]
