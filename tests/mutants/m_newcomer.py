"""Planted bugs for what a newcomer walkthrough (2026-12-07, eighth session) found."""

from __future__ import annotations

from tests.mutants import Mutant

T = "tests/test_cli.py::"

MUTANTS: list[Mutant] = [
    Mutant("newcomer-upload-loses-artifact", "polyhead/trainer/output.py",
           "        if saved is None and keep is not None:\n",
           "        if False:\n",
           (T + "test_a_failed_upload_keeps_the_trained_artifact",),
           "train --upload to a server that was down trained to the end, then lost the artifact"),
    Mutant("newcomer-keep-overwrites", "polyhead/trainer/output.py",
           "    while candidate.exists():\n",
           "    while False:\n",
           (T + "test_a_failed_upload_keeps_the_trained_artifact",),
           "the kept artifact would overwrite a file of the same name"),
    Mutant("newcomer-upload-not-checked-first", "polyhead/trainer/cli.py",
           "        check_upload(targets)\n",
           "        pass\n",
           (T + "test_train_upload_checks_the_server_before_training",),
           "train --upload found the server down only after training"),
    Mutant("newcomer-no-unreachable-hint", "polyhead/client/_common.py",
           '    if "refused" in details.lower() or "failed to connect" in details.lower():\n',
           "    if False:\n",
           (T + "test_a_server_that_does_not_answer_gets_a_hint",),
           "no server running: gRPC's words only, nothing said to start one"),
    Mutant("newcomer-bare-host", "polyhead/client/_common.py",
           "    if not host or not port.isdigit()",
           "    if not port.isdigit()",
           (T + "test_a_server_that_does_not_answer_gets_a_hint", T + "test_addresses_need_a_port"),
           "--server localhost went quietly to port 443"),
    Mutant("newcomer-typo-top-usage", "polyhead/cli.py",
           "        if self._subparsers is None and args is not None:  # a verb's own parser\n",
           "        if False:\n",
           (T + "test_a_mistyped_flag_is_named_in_its_verbs_usage",),
           "a mistyped flag got the top-level usage, or only 'required: --task'"),
    Mutant("newcomer-typo-prefix", "polyhead/cli.py",
           "not any(o.startswith(name) for o in known)",
           "name not in known",
           (T + "test_flag_prefixes_and_dashed_texts_still_parse",),
           "an abbreviated flag (argparse takes prefixes) refused as unknown"),
    Mutant("newcomer-typo-after-dashes", "polyhead/cli.py",
           '            if arg == "--":\n                return\n',
           "",
           (T + "test_flag_prefixes_and_dashed_texts_still_parse",),
           "a text after -- that starts with -- refused as an unknown flag"),
]
