"""The README's benchmark table is benchmarks/results.json rendered; run_all records, merges and survives missing files."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import renderers  # noqa: E402
import run_all  # noqa: E402
from render_table import README, render, render_detail, stale_blocks, table_rows, with_block  # noqa: E402
from run_all import BENCHMARKS, NOT_RUN_HERE, RESULTS, Benchmark, load_results  # noqa: E402


def test_readme_tables_are_what_results_json_gives():
    assert stale_blocks(README.read_text(), load_results(RESULTS)) == [], (
        "README.md's generated tables differ from benchmarks/results.json: run python benchmarks/render_table.py"
    )


def test_a_detail_table_says_where_it_comes_from_and_what_to_run_before_a_run():
    study = next(b for b in BENCHMARKS if b.name == "mlm_budget")
    assert "Not run yet: `python benchmarks/mlm_budget.py`" in render_detail(study, None)
    variants = {"base": {"top1": 6.7, "top5": 22.5, "baseline_top1": 6.7, "ratio_to_baseline": 1.0, "steps": 160,
                         "description": "post-LN BERT"},
                "modernbert": {"top1": 14.2, "top1_std": 0.3, "top5": 30.1, "baseline_top1": 6.7, "ratio_to_baseline": 2.12,
                               "steps": 160, "description": "ModernBERT"}}
    entry = {"status": "ok", "command": "python benchmarks/mlm_budget.py", "commit": "abcdef0123",
             "result": {"benchmark": "mlm_budget", "objective": "mlm", "variants": variants}}
    table = render_detail(study, entry)
    assert "`python benchmarks/mlm_budget.py` at commit `abcdef0`" in table
    assert "| `base`: post-LN BERT | 6.70 | 22.50 | 6.70 | 1.00 | 160 |" in table
    assert "| `modernbert`: ModernBERT | **14.20 ± 0.30** |" in table


def test_every_benchmark_script_is_in_the_run_all_table():
    scripts = {
        path.stem for path in (REPO_ROOT / "benchmarks").glob("*.py")
        if '"benchmark":' in path.read_text() and '__name__ == "__main__"' in path.read_text()
    }
    listed = {benchmark.name for benchmark in BENCHMARKS} | set(NOT_RUN_HERE)
    assert scripts - listed == set(), "add these benchmarks to run_all.BENCHMARKS (or NOT_RUN_HERE, with the reason)"


JSON_LINES = REPO_ROOT / "tests" / "benchmark_json_lines.jsonl"  # one line per benchmark: --quick runs, a full vision_knn, hand-made where too slow


def test_every_renderer_turns_its_benchmarks_json_line_into_filled_cells():
    lines = {line["benchmark"]: line for line in map(json.loads, JSON_LINES.read_text().splitlines())}
    for benchmark in BENCHMARKS:
        assert benchmark.render is not renderers.generic, f"{benchmark.name} has no renderer in renderers.py"
        cells = benchmark.render(lines[benchmark.runs or benchmark.name])
        assert cells and all(what and result for what, result in cells), benchmark.name
        if benchmark.detail is not None:
            assert benchmark.detail(lines[benchmark.runs or benchmark.name]).count("\n|") >= 2, benchmark.name


def mlm_result() -> dict:
    def row(nlpssl: int, hf: int, vocab: int) -> dict:
        return {
            "nlpssl_tokens_per_s": nlpssl, "hf_tokens_per_s": hf, "ratio": round(nlpssl / hf, 3), "collator_ratio": 2.5,
            "architecture": "bert", "hidden_size": 256, "num_layers": 4, "num_heads": 4, "intermediate_size": 1024,
            "vocab_size": vocab, "corpus": "WikiText-2", "batch_size": 32, "block_size": 128,
        }

    rows = {"small_30k": row(4600, 1400, 30522), "recipe": row(3000, 2000, 8000), "bert_base": row(300, 290, 30522)}
    return {"benchmark": "mlm_throughput", "headline": "recipe", "ratio": 1.5, "rows": rows}


def test_mlm_renderer_gives_one_row_per_model_and_bolds_only_the_headline():
    cells = renderers.mlm_throughput(mlm_result())
    assert len(cells) == 3
    small, recipe, base = (result for _, result in cells)
    assert recipe.startswith("**1.50x**") and "3,000 vs 2,000" in recipe
    assert small.startswith("3.29x") and base.startswith("1.03x")
    assert "vocab 8,000" in cells[1][0] and "configs/mlm.yaml" in cells[1][0]


def test_accuracy_renderers_show_mean_and_spread_of_the_seeds():
    spread = {"mean": 83.49, "std": 0.61, "values": [83.0, 83.3, 84.17]}
    side = {"examples_per_s": 60.0, "dev_accuracy": spread, "validation_accuracy": spread, "best_steps": [189] * 3}
    finetune = {
        "train_examples": 2000, "validation_examples": 876, "steps": 189, "batch_size": 32, "epochs": 3, "seeds": [0, 1, 2],
        "reference": "hf_grouped", "sides": {"nlpssl": side | {"examples_per_s": 90.0}, "hf_grouped": side, "hf_glue": side},
        "ratio": 1.5, "ratio_vs_hf_glue": 5.2,
    }
    reference, context = renderers.finetune_sst2(finetune)
    assert reference[1].startswith("**1.50x**") and "83.49 ± 0.61" in reference[1]
    assert context[1].startswith("5.20x") and "3 seeds" in reference[0]
    pays = {"mlm_steps": 3000, "seeds": [0, 1, 2], "sst2_dev_accuracy": [
        {"train_examples": 1000, "pretrained": spread, "random_init": spread, "margin": {"mean": -1.7, "std": 2.0}}]}
    assert "**-1.70 ± 2.00**" in renderers.pretraining_pays(pays)[0][1]
    knn = {"steps": 400, "batch_size": 128, "train_images": 10000, "width": 32, "knn_k": 200, "test_images": 10000,
           "seeds": [0, 1, 2], "knn": {"simclr": 44.14}, "knn_std": {"simclr": 0.34}, "random_init": 29.62,
           "random_init_std": 1.04, "beats_random": {"simclr": True}}
    assert "untrained ResNet 29.62 ± 1.04; simclr 44.14 ± 0.34 (+14.52)" in renderers.vision_knn(knn)[0][1]


def test_a_result_that_no_longer_fits_its_renderer_falls_back_to_the_generic_cells():
    results = {"quick": False, "machine": run_all.machine(), "updated": "2030-01-01T00:00:00+00:00", "benchmarks": {
        "clm_throughput": {"status": "ok", "command": "python benchmarks/clm_throughput.py", "quick": False,
                           "commit": "abcdef0123", "result": {"benchmark": "clm_throughput", "speedup": 1.25}}}}
    assert "speedup 1.25" in render(results)


def test_render_marks_smoke_runs_failures_and_benchmarks_not_run():
    entry = {"command": "python benchmarks/x.py --quick", "quick": True, "commit": "abcdef0123"}
    results = {"quick": True, "machine": run_all.machine(), "updated": "2030-01-01T00:00:00+00:00", "benchmarks": {
        "mlm_throughput": entry | {"status": "ok", "result": mlm_result()},
        "clm_throughput": entry | {"status": "failed", "error": "exit status 1"},
    }}
    block = render(results)
    assert "Smoke run" in block and "(smoke run) **1.50x**" in block
    assert "failed (exit status 1) at commit abcdef0" in block
    assert block.count("not run yet") == len(BENCHMARKS) - 2
    assert all(f"`python benchmarks/{b.runs or b.name}.py" in render(None) for b in BENCHMARKS)


def test_with_block_replaces_only_the_text_between_the_markers():
    text = "intro\n<!-- benchmarks:start -->\nold\n<!-- benchmarks:end -->\noutro\n"
    assert with_block(text, "new") == "intro\n<!-- benchmarks:start -->\nnew\n<!-- benchmarks:end -->\noutro\n"
    with pytest.raises(SystemExit, match="markers"):
        with_block("no markers here", "new")


@pytest.fixture()
def fake_repo(tmp_path):
    """A repository folder with benchmarks that print a JSON line (from a file they read), fail, or print none."""
    (tmp_path / "benchmarks").mkdir()
    script = textwrap.dedent("""
        import json, pathlib, sys
        print("progress line")
        print("warning", file=sys.stderr)
        print(json.dumps({"benchmark": "%s", "args": sys.argv[1:], "value": pathlib.Path("value.txt").read_text()}))
    """)
    for name in ("first", "second"):
        (tmp_path / "benchmarks" / f"{name}.py").write_text(script % name)
    (tmp_path / "benchmarks" / "broken.py").write_text("import sys\nprint('no json')\nsys.exit(3)\n")
    (tmp_path / "benchmarks" / "silent.py").write_text("print('done, but no JSON line')\n")
    (tmp_path / "value.txt").write_text("one")
    return tmp_path


def test_run_all_records_each_json_line_with_command_time_commit_and_machine(fake_repo):
    table = (Benchmark("first", args=("--full",)), Benchmark("absent"), Benchmark("broken"), Benchmark("silent"))
    results_path = fake_repo / "results.json"
    run_all.run(["first", "absent", "broken", "silent"], False, results_path, table, fake_repo)
    saved = json.loads(results_path.read_text())
    first = saved["benchmarks"]["first"]
    assert first["status"] == "ok" and first["result"] == {"benchmark": "first", "args": ["--full"], "value": "one"}
    assert first["command"] == "python benchmarks/first.py --full" and first["wall_s"] >= 0
    assert {"commit", "machine", "finished"} <= first.keys() and saved["machine"]["cores"] >= 1
    assert saved["benchmarks"]["absent"]["status"] == "missing"
    assert saved["benchmarks"]["broken"]["status"] == "failed" and "exit status 3" in saved["benchmarks"]["broken"]["error"]
    assert saved["benchmarks"]["silent"]["error"] == "the last stdout line is not a JSON object"
    assert saved["quick"] is False


def test_only_code_changes_mark_a_result_as_from_uncommitted_code(tmp_path):
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "benchmarks").mkdir()
    files = {"benchmarks/results.json": "{}", "benchmarks/results-quick.json": "{}", "README.md": "# r", "model.py": "x = 1"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "start")
    assert run_all.commit(tmp_path)["uncommitted_changes"] is False
    for name in ("benchmarks/results.json", "benchmarks/results-quick.json", "README.md"):  # what run_all itself rewrites
        (tmp_path / name).write_text("changed")
    assert run_all.commit(tmp_path)["uncommitted_changes"] is False
    (tmp_path / "model.py").write_text("x = 2")
    assert run_all.commit(tmp_path)["uncommitted_changes"] is True


def test_only_replaces_the_entries_it_reruns(fake_repo):
    table = (Benchmark("first"), Benchmark("second", quick_args=("--few",)))
    results_path = fake_repo / "results.json"
    run_all.run(["first", "second"], False, results_path, table, fake_repo)
    (fake_repo / "value.txt").write_text("two")
    run_all.run(["second"], True, results_path, table, fake_repo)
    saved = json.loads(results_path.read_text())
    assert saved["benchmarks"]["first"]["result"]["value"] == "one" and saved["benchmarks"]["first"]["quick"] is False
    assert saved["benchmarks"]["second"]["result"] == {"benchmark": "second", "args": ["--few"], "value": "two"}
    assert saved["quick"] is True and list(saved["benchmarks"]) == ["first", "second"]


def test_a_failed_rerun_keeps_the_earlier_result_and_says_so(fake_repo):
    table = (Benchmark("first"),)
    results_path = fake_repo / "results.json"
    run_all.run(["first"], False, results_path, table, fake_repo)
    (fake_repo / "value.txt").unlink()  # the rerun now dies reading it
    run_all.run(["first"], False, results_path, table, fake_repo)
    entry = json.loads(results_path.read_text())["benchmarks"]["first"]
    assert entry["status"] == "ok" and entry["result"]["value"] == "one"
    assert entry["last_attempt"]["status"] == "failed" and entry["last_attempt"]["error"] == "exit status 1"
    rows = table_rows(table[0], entry)
    assert rows[0][2] == renderers.generic(entry["result"])[0][1] and "failed (exit status 1)" in rows[1][2]
    assert run_all.still_to_run(load_results(results_path), table) == []  # the earlier result is still today's command's
    (fake_repo / "value.txt").write_text("two")
    run_all.run(["first"], False, results_path, table, fake_repo)  # a rerun that works replaces both
    entry = json.loads(results_path.read_text())["benchmarks"]["first"]
    assert entry["result"]["value"] == "two" and "last_attempt" not in entry


def test_missing_picks_benchmarks_without_a_full_entry_of_todays_command(fake_repo):
    table = (Benchmark("first", args=("--full",)), Benchmark("second"), Benchmark("broken"), Benchmark("absent"))
    results_path = fake_repo / "results.json"
    run_all.run(["first", "second", "broken"], False, results_path, table, fake_repo)
    assert run_all.still_to_run(load_results(results_path), table) == ["broken", "absent"]
    run_all.run(["second"], True, results_path, table, fake_repo)  # a smoke run replaces the full entry
    changed = (Benchmark("first", args=("--longer",)), *table[1:])  # today's command differs from the recorded one
    assert run_all.still_to_run(load_results(results_path), changed) == ["first", "second", "broken", "absent"]
    assert run_all.still_to_run(None, table) == ["first", "second", "broken", "absent"]


@pytest.mark.slow
def test_run_all_quick_runs_a_real_benchmark_end_to_end(tmp_path):
    results_path = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/run_all.py", "--quick", "--only", "clm_throughput", "--results", str(results_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    entry = json.loads(results_path.read_text())["benchmarks"]["clm_throughput"]
    assert entry["status"] == "ok" and entry["quick"] and entry["result"]["ratio"] > 0
    assert "clm_throughput" in render(load_results(results_path))
