"""Planted bugs for what the ClassifyStream probe found: a key revoked or expired while its
stream is open kept working, and answers were held back until 8 messages were in flight."""

from __future__ import annotations

from tests.mutants import Mutant

A = "tests/test_abuse.py::"
U = "tests/test_serve_units.py::"

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
    Mutant("probe-stream-answer-waits-for-next-message", "polyhead/server/_private/services.py",
           "return_when=asyncio.FIRST_COMPLETED",
           "return_when=asyncio.ALL_COMPLETED",
           (A + "test_a_stream_answers_each_message_as_soon_as_it_is_done",),
           "an answer went out only with the next message: a client that waits for it never got it"),
    Mutant("probe-stream-no-pipelining", "polyhead/server/_private/services.py",
           "len(window) < STREAM_WINDOW",
           "len(window) < 1",
           (U + "test_classify_stream_holds_at_most_its_window_and_answers_in_order",),
           "answers came at once but one message at a time: no batching across a stream's messages"),
    Mutant("probe-stream-pending-read-cancelled", "polyhead/server/_private/streams.py",
           "            return await asyncio.shield(read)\n",
           "            return await read\n",
           (A + "test_a_stream_ended_mid_way_is_still_read_to_its_end_before_its_status",),
           "a stream ended by a message mid-way closed grpc's request iterator: its status could "
           "race the client's writes (INTERNAL, grpc#36066)"),
]
