"""Spearman rank correlation between predicted and gold scores (SciPy); the STS metric."""

import datasets
import evaluate
from scipy.stats import spearmanr

_DESCRIPTION = """
Spearman's rho is the Pearson correlation of the ranks (ties get their average
rank): +1 when predictions order the examples exactly as the gold scores do,
whatever the scale. Sentence-embedding papers (SBERT, SimCSE) report it on STS
as cosine similarity against human scores.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): predicted scores, shape (N,).
    references (list of float): gold scores, shape (N,).
    return_pvalue (bool): also return the two-sided p-value. Default False.
Returns:
    spearmanr (float): in [-1, 1] (NaN when either side is constant).
    pvalue (float): only with return_pvalue=True.
Example:
    >>> spearman = evaluate.load("/path/to/nlpssl/metrics/spearmanr")
    >>> spearman.compute(predictions=[0.1, 0.4, 0.3], references=[1.0, 5.0, 2.0])
    {'spearmanr': 1.0}
"""

_CITATION = """
@article{spearman1904proof,
  title={The Proof and Measurement of Association between Two Things},
  author={Spearman, C.},
  journal={The American Journal of Psychology},
  volume={15},
  number={1},
  pages={72--101},
  year={1904}
}
"""


class Spearmanr(evaluate.Metric):
    """Spearman's rank correlation between predicted and gold scores."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
            reference_urls=["https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.spearmanr.html"],
        )

    def _compute(self, predictions, references, return_pvalue=False):
        result = spearmanr(references, predictions)
        scores = {"spearmanr": float(result.statistic)}
        if return_pvalue:
            scores["pvalue"] = float(result.pvalue)
        return scores
