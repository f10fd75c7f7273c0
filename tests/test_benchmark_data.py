"""The benchmarks' data helpers: SNLI triples for the supervised SimCSE control."""

from __future__ import annotations

import sys

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from common import snli_triples  # noqa: E402


def test_snli_triples_pair_each_premise_with_its_entailed_and_contradicted_hypothesis(shared_data):
    root = shared_data / "snli_devtest"
    premises, hypotheses, labels = ((root / f"{name}.dev").read_text().splitlines() for name in ("s1", "s2", "labels"))
    triples = snli_triples(("dev",))
    assert 0.8 * len(set(premises)) < len(triples) <= len(set(premises))  # most premises have both labels
    labelled = {(p.strip(), h.strip()): label.strip() for p, h, label in zip(premises, hypotheses, labels)}
    for row in triples.select(range(50)):
        assert labelled[(row["anchor"], row["positive"])] == "entailment"
        assert labelled[(row["anchor"], row["negative"])] == "contradiction"
