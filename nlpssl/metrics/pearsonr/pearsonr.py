"""Pearson correlation between predicted and gold scores (SciPy); the STS-B companion metric."""

import datasets
import evaluate
from scipy.stats import pearsonr

_DESCRIPTION = """
The Pearson correlation coefficient measures the linear relationship between
predicted and gold real-valued scores: +1 when one is an increasing affine
function of the other, 0 when uncorrelated, -1 when decreasing.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): predicted scores, shape (N,).
    references (list of float): gold scores, shape (N,).
    return_pvalue (bool): also return the two-sided p-value. Default False.
Returns:
    pearsonr (float): in [-1, 1] (NaN when either side is constant).
    pvalue (float): only with return_pvalue=True.
Example:
    >>> pearson = evaluate.load("/path/to/nlpssl/metrics/pearsonr")
    >>> pearson.compute(predictions=[1.0, 2.0, 3.0], references=[2.0, 4.0, 6.5])
    {'pearsonr': 0.9979487157886733}
"""

_CITATION = """
@article{2020SciPy-NMeth,
  title={{SciPy} 1.0: Fundamental Algorithms for Scientific Computing in Python},
  author={Virtanen, Pauli and Gommers, Ralf and Oliphant, Travis E. and others},
  journal={Nature Methods},
  volume={17},
  pages={261--272},
  year={2020}
}
"""


class Pearsonr(evaluate.Metric):
    """Pearson's r between predicted and gold scores."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
            reference_urls=["https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.pearsonr.html"],
        )

    def _compute(self, predictions, references, return_pvalue=False):
        result = pearsonr(references, predictions)
        scores = {"pearsonr": float(result.statistic)}
        if return_pvalue:
            scores["pvalue"] = float(result.pvalue)
        return scores
