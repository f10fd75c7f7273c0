"""Offline `evaluate` metric modules shipped with nlpssl, one folder each.

Every ``<name>/<name>.py`` defines one ``evaluate.Metric`` and loads without the
Hub: ``evaluate.load(str(METRICS_DIR / "accuracy"))``. Use
:func:`nlpssl.evaluation.metrics.load_metric` rather than building paths by hand.
The module files are self-contained (evaluate copies each one, alone, into its
modules cache before importing it), so they import nothing from nlpssl.
"""

from __future__ import annotations

from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent
