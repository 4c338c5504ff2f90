"""Planted bugs for what the ClassifyStream probe found: a key revoked or expired while its
stream is open kept working, and answers were held back until 8 messages were in flight."""

from __future__ import annotations

from tests.mutants import Mutant

A = "tests/test_abuse.py::"

MUTANTS: list[Mutant] = [
    Mutant("probe-stream-key-checked-once", "polyhead/server/_private/gate.py",
           "            recheck()\n",
           "            pass\n",
           (A + "test_a_key_revoked_or_expired_mid_stream_ends_its_stream",),
           "a revoked or expired key kept working on a stream opened before"),
    Mutant("probe-stream-recheck-without-key", "polyhead/server/_private/gate.py",
           "partial(self.auth.check, scope, md)",
           "partial(self.auth.check, scope, ())",
           (A + "test_a_key_revoked_or_expired_mid_stream_ends_its_stream",),
           "the per-message check looked at no credentials: every stream refused at message 0"),
]
