"""The mutation check's own parts (tests/mutants/__main__.py), without running a mutant:
every mutant applies to today's tree, names tests that exist, and a bad one is named."""

from __future__ import annotations

from pathlib import Path

from tests.mutants import Mutant
from tests.mutants.__main__ import ROOT, edit_problem, first_failure, load_mutants


def test_every_mutant_applies_once_and_names_existing_tests() -> None:
    mutants = load_mutants()
    assert len(mutants) >= 25 and len({m.id for m in mutants}) == len(mutants)
    problems = {m.id: p for m in mutants if (p := edit_problem(m)) is not None}
    assert problems == {}
    for m in mutants:
        assert m.tests and m.old != m.new, m.id
        for t in m.tests:
            path = t.split("::")[0]
            assert (ROOT / path).is_file(), (m.id, t)
            if "::" in t:
                name = t.split("::")[1].split("[")[0]
                assert f"def {name}(" in (ROOT / path).read_text(), (m.id, t)


def test_a_mutant_whose_text_is_not_there_once_is_named(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\nx = 1\n")
    twice = Mutant("twice", "a.py", "x = 1", "x = 2", ("tests/test_x.py",))
    assert edit_problem(twice, tmp_path) == "its old text occurs 2 times in a.py (must be once)"
    gone = Mutant("gone", "a.py", "y = 1", "y = 2", ("tests/test_x.py",))
    assert "occurs 0 times" in (edit_problem(gone, tmp_path) or "")
    assert "does not exist" in (edit_problem(Mutant("f", "b.py", "", "", ()), tmp_path) or "")
    assert edit_problem(Mutant("ok", "a.py", "x = 1\nx", "x", ()), tmp_path) is None
    out = "....\nFAILED tests/test_a.py::test_b - AssertionError\nFAILED tests/test_a.py::test_c\n"
    assert first_failure(out) == "FAILED tests/test_a.py::test_b - AssertionError"
