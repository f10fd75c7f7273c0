"""The benchmarks' run ledger: a stopped long benchmark reuses only runs of the very same code, arguments and machine."""

from __future__ import annotations

import sys

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from run_ledger import RunLedger, fingerprint  # noqa: E402


def a_repo(root):
    """A tree with one file under each of the globs the fingerprint reads."""
    for relative in ("nlpssl/losses.py", "benchmarks/vision_knn.py", "benchmarks/run_all.py", "configs/vision/simclr.yaml",
                     "scripts/pretrain_mlm.py"):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {relative}\n")
    return root


def test_fingerprint_changes_with_code_arguments_and_only_those(tmp_path):
    repo = a_repo(tmp_path)
    arguments, scripts = {"steps": 400, "batch_size": 128}, ["vision_knn.py"]
    first = fingerprint(arguments, scripts, repo)
    assert fingerprint(dict(arguments), list(scripts), repo) == first
    assert fingerprint({**arguments, "steps": 401}, scripts, repo) != first
    (repo / "configs/vision/simclr.yaml").write_text("method:\n  temperature: 0.5\n")
    second = fingerprint(arguments, scripts, repo)
    assert second != first
    (repo / "nlpssl/losses.py").write_text("# changed\n")
    third = fingerprint(arguments, scripts, repo)
    assert third != second
    (repo / "benchmarks/vision_knn.py").write_text("# changed\n")
    fourth = fingerprint(arguments, scripts, repo)
    assert fourth != third
    (repo / "scripts/pretrain_mlm.py").write_text("# a benchmark may run it\n")
    fourth, previous = fingerprint(arguments, scripts, repo), fourth
    assert fourth != previous
    (repo / "benchmarks/run_all.py").write_text("# the runner cannot move a figure\n")
    (repo / "README.md").write_text("prose is not code")
    assert fingerprint(arguments, scripts, repo) == fourth


def test_a_recorded_run_is_reused_under_its_fingerprint_only(tmp_path):
    path = tmp_path / "out" / "runs.jsonl"
    ledger = RunLedger(path, "aaaa")
    assert ledger.get("simclr", 0) is None
    assert ledger.record("simclr", 0, (43.81, 893.0, 39.0)) == [43.81, 893.0, 39.0]

    later = RunLedger(path, "aaaa")
    assert later.get("simclr", 0) == [43.81, 893.0, 39.0]
    assert later.get("simclr", 1) is None and later.get("moco", 0) is None
    assert later.reused == ["simclr:0"]
    assert RunLedger(path, "bbbb").get("simclr", 0) is None


def test_a_line_cut_short_by_a_kill_is_skipped_and_that_run_trains_again(tmp_path):
    path = tmp_path / "runs.jsonl"
    RunLedger(path, "aaaa").record("simclr", 0, (40.0, 1.0, 1.0))
    with open(path, "a") as ledger:
        ledger.write('{"name": "moco", "seed": 0, "fingerp')
    ledger = RunLedger(path, "aaaa")
    assert ledger.get("moco", 0) is None
    assert ledger.get("simclr", 0) == [40.0, 1.0, 1.0]
    ledger.record("moco", 0, (38.4, 2.0, 2.0))
    assert RunLedger(path, "aaaa").get("moco", 0) == [38.4, 2.0, 2.0]


def test_run_computes_only_what_the_ledger_lacks(tmp_path):
    path = tmp_path / "runs.jsonl"
    calls = []

    def train(score):
        def compute():
            calls.append(score)
            return (score, 1.0, 1.0)
        return compute

    first = RunLedger(path, "aaaa")
    assert first.run("simclr", 0, train(43.81)) == [43.81, 1.0, 1.0]
    assert first.run("simclr", 0, train(0.0)) == [43.81, 1.0, 1.0]  # recorded runs are not recomputed
    later = RunLedger(path, "aaaa")
    assert later.run("simclr", 0, train(0.0)) == [43.81, 1.0, 1.0]
    assert later.run("moco", 0, train(38.4)) == [38.4, 1.0, 1.0]
    assert calls == [43.81, 38.4] and later.reused == ["simclr:0"]


def test_wikitext_mlm_is_reused_under_the_same_code_and_retrained_after_a_change(tmp_path, monkeypatch):
    import common
    import run_ledger

    trained = []

    def pretrain(out, steps):  # stands in for the hour of masked LM
        (out / "final").mkdir(parents=True)
        (out / "final" / "config.json").write_text("{}")
        trained.append(steps)
        return out / "final"

    code = {"value": "aaaa"}
    monkeypatch.setattr(common, "pretrain_wikitext_mlm", pretrain)
    monkeypatch.setattr(run_ledger, "fingerprint", lambda arguments, scripts: code["value"] + str(arguments))
    assert common.wikitext_mlm(30, tmp_path) == (tmp_path / "steps30" / "final", False)
    assert common.wikitext_mlm(30, tmp_path) == (tmp_path / "steps30" / "final", True)  # a prose-only commit changes nothing
    code["value"] = "bbbb"
    assert common.wikitext_mlm(30, tmp_path) == (tmp_path / "steps30" / "final", False)
    assert trained == [30, 30]
