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
    series = curve_series(read_records(run_dir))
    if not series:
        return None
    columns = min(3, len(series))
    rows = math.ceil(len(series) / columns)
    figure = Figure(figsize=(4.2 * columns, 3.0 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    for index, (key, (steps, values)) in enumerate(series.items()):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3)
        axes.set_title(key.replace("_", " "))
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
        if key == "lr":
            axes.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    figure.suptitle(Path(run_dir).resolve().name)
    output = Path(output) if output else Path(run_dir) / "curves.png"
    figure.savefig(output, dpi=100)
    return output
