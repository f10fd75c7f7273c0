"""Pictures of a run: ``curves.png`` from ``metrics.jsonl`` (loss, learning rate, throughput, evaluations)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_NOT_CURVES = {"step", "sample"}


def read_records(run_dir: str | Path) -> list[dict]:
    """The JSON objects of ``run_dir/metrics.jsonl``; a torn last line (a killed run) is dropped."""
    path = Path(run_dir) / "metrics.jsonl"
    records = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def curve_series(records: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """Each numeric key -> (steps, values), in the order the keys first appear."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for record in records:
        for key, value in record.items():
            if key in _NOT_CURVES or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            steps, values = series.setdefault(key, ([], []))
            steps.append(record["step"])
            values.append(float(value))
    return series


def plot_curves(run_dir: str | Path, output: str | Path | None = None) -> Path | None:
    """Write one panel per logged quantity against step to ``run_dir/curves.png``; None without records.

    Example::

        plot_curves("outputs/vision/simclr")   # outputs/vision/simclr/curves.png
    """
    return plot_runs([run_dir], output or Path(run_dir) / "curves.png")


def plot_runs(run_dirs: list[str | Path], output: str | Path) -> Path | None:
    """One panel per logged quantity, a line per run (labelled by folder name); None without records.

    Works on a run in progress: a torn last line of ``metrics.jsonl`` is skipped.

    Example::

        plot_runs(["outputs/mlm", "runs/mlm_lr1e-3"], "compare.png")
    """
    runs = {Path(run).resolve().name: curve_series(read_records(run)) for run in run_dirs}
    keys = list(dict.fromkeys(key for series in runs.values() for key in series))
    if not keys:
        return None
    columns = min(3, len(keys))
    rows = math.ceil(len(keys) / columns)
    figure = Figure(figsize=(4.2 * columns, 3.0 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    for index, key in enumerate(keys):
        axes = figure.add_subplot(rows, columns, index + 1)
        for label, series in runs.items():
            if key in series:
                steps, values = series[key]
                axes.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=label)
        axes.set_title(key.replace("_", " "))
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
        if key == "lr":
            axes.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        if len(runs) > 1 and index == 0:
            axes.legend(fontsize=8)
    figure.suptitle(", ".join(runs))
    output = Path(output)
    figure.savefig(output, dpi=100)
    return output
