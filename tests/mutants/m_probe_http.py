"""Planted bugs for the HTTP route's denial-of-service probe (POST /v1/classify): a body
parsed on the replica's event loop, its inputs counted only after ParseDict built them, a
body read with no deadline."""

from __future__ import annotations

from tests.mutants import Mutant

T = "tests/test_abuse.py::"
HTTP = "polyhead/server/_private/http.py"

MUTANTS: list[Mutant] = [
    Mutant("probe-http-count-after-parse", HTTP,
           "        if isinstance(inputs, list):\n            check_count(len(inputs), max_inputs)\n",
           "",
           (T + "test_http_too_many_inputs_are_refused_before_the_message_is_built",),
           "580,000 inputs were built by ParseDict (3.4-4.9 s) before the limit of 64 refused them"),
    Mutant("probe-http-parse-on-loop", HTTP,
           "        message = await asyncio.get_running_loop().run_in_executor(\n"
           "            parse_on, parse_body, raw, limits.max_inputs)\n",
           "        message = parse_body(raw, limits.max_inputs)\n",
           (T + "test_http_body_is_parsed_off_the_event_loop",),
           "a 7 MB body parsed on the event loop took gRPC Classify's p50 from 16 ms to 3.5 s"),
    Mutant("probe-http-body-no-deadline", HTTP,
           "        async with asyncio.timeout(timeout_s):\n",
           "        async with asyncio.timeout(None):\n",
           (T + "test_http_body_that_stops_arriving_is_answered_408",),
           "2,100 sockets that sent `{` of a 1000-byte body held the replica's 2048 slots for good"),
    Mutant("probe-http-body-deadline-per-chunk", HTTP,
           "        async with asyncio.timeout(timeout_s):\n"
           "            async for chunk in request.stream():\n",
           "        async with asyncio.timeout(None) as deadline:\n"
           "            async for chunk in request.stream():\n"
           "                deadline.reschedule(asyncio.get_running_loop().time() + timeout_s)\n",
           (T + "test_http_body_that_stops_arriving_is_answered_408",),
           "a deadline per chunk: a body trickled a byte at a time held its slot for good"),
    Mutant("probe-http-bodies-uncapped", HTTP,
           "        with bodies.holding(owner) if bodies is not None else contextlib.nullcontext():\n",
           "        with contextlib.nullcontext():\n",
           (T + "test_one_client_sends_at_most_its_cap_of_http_bodies_at_once",),
           "one client's 2,100 slow bodies held every replica slot (30 s at a time with the deadline)"),
]
