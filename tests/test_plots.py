"""curves.png: one panel per logged quantity, several runs overlaid, a torn last line tolerated."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from nlpssl.evaluation.plots import curve_series, plot_runs, read_records
from tests.conftest import REPO_ROOT


def _write_run(folder, losses, torn=False):
    folder.mkdir()
    lines = [json.dumps({"step": i + 1, "loss": loss, "lr": 1e-3}) for i, loss in enumerate(losses)]
    lines.append(json.dumps({"step": len(losses), "knn_accuracy": 50.0}))
    text = "\n".join(lines) + "\n" + ('{"step": 9, "lo' if torn else "")
    (folder / "metrics.jsonl").write_text(text)
    return folder


def test_series_skip_the_torn_last_line_and_non_numbers(tmp_path):
    run = _write_run(tmp_path / "a", [3.0, 2.0], torn=True)
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write("\n" + json.dumps({"step": 2, "sample": "text", "flag": True}) + "\n")
    records = read_records(run)
    series = curve_series(records)
    assert series["loss"] == ([1, 2], [3.0, 2.0])
    assert series["knn_accuracy"] == ([2], [50.0])
    assert "sample" not in series and "flag" not in series and "step" not in series


def test_runs_are_overlaid_in_one_picture(tmp_path):
    first, second = _write_run(tmp_path / "a", [3.0, 2.0]), _write_run(tmp_path / "b", [4.0, 1.0, 0.5])
    picture = plot_runs([first, second], tmp_path / "both.png")
    width, height = Image.open(picture).size
    assert width > 1000 and height > 250  # three panels: loss, lr, knn accuracy
    assert plot_runs([_write_run(tmp_path / "empty", [])], tmp_path / "x.png") is not None  # a lone eval record still plots


def test_plot_run_script_refuses_a_folder_without_metrics(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("plot_run", REPO_ROOT / "scripts" / "plot_run.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with pytest.raises(SystemExit) as stop:
        script.main([str(tmp_path)])
    assert stop.value.code == 2 and "holds no metrics.jsonl" in capsys.readouterr().err
    run = _write_run(tmp_path / "run", [1.0])
    script.main([str(run)])
    assert (run / "curves.png").is_file()
