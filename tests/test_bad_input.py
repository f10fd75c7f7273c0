"""The bad-input catalogue (tests/bad_input_cases.py): every case ends with one error line and exit status 2,
and docs/bad_input.md lists exactly what the scripts print."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bad_input_cases import CASES, DOC, REPO, Case, render, run_all

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict:
    """Every case run once, in this process, each in a folder of its own."""
    return run_all(CASES, tmp_path_factory.mktemp("bad_input"))


def test_case_names_are_unique_and_every_script_exists():
    names = [case.name for case in CASES]
    assert len(names) == len(set(names)), sorted(name for name in names if names.count(name) > 1)
    assert all((REPO / "scripts" / case.script).is_file() for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_each_bad_input_ends_with_one_error_line_and_its_exit_status(case: Case, outcomes):
    outcome = outcomes[case.name]
    assert not outcome.crash, f"{case.name} crashed instead of printing one line:\n{outcome.crash}"
    assert outcome.status == case.status
    assert len(outcome.errors) == 1, outcome.errors
    assert case.expect in outcome.errors[0]


def test_docs_bad_input_md_is_what_the_scripts_print(outcomes):
    fresh = render(CASES, outcomes)
    current = DOC.read_text() if DOC.is_file() else ""
    assert current == fresh, "docs/bad_input.md is out of date: run  python -m tests.bad_input_cases --write"


def test_the_command_line_prints_what_the_in_process_run_printed(outcomes, tmp_path):
    """The catalogue calls ``main(argv)``; ``python scripts/...`` must exit and print the same (one case: imports cost seconds)."""
    case = next(case for case in CASES if case.name == "unknown-key")
    env = os.environ | {"PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / case.script), *case.args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert "Traceback" not in result.stderr
    assert (result.returncode, result.stderr.strip().splitlines()[-1]) == (outcomes[case.name].status, outcomes[case.name].errors[0])


def test_the_document_escapes_pipes_and_names_the_given_files():
    def given(folder: Path) -> None:
        """`a|b.txt`: a file"""

    case = Case("pipe", "pretrain_mlm.py", ("--data.text_column=a|b",), "x", given)
    from tests.bad_input_cases import Outcome

    document = render([case], {"pipe": Outcome(2, ("error: no column 'a|b'",))})
    assert "| pipe | `'--data.text_column=a\\|b'` | `a\\|b.txt`: a file | `error: no column 'a\\|b'` | 2 |" in document  # shell-quoted
