"""Matthews correlation coefficient of class predictions (scikit-learn); the CoLA metric."""

import datasets
import evaluate
from sklearn.metrics import matthews_corrcoef

_DESCRIPTION = """
The Matthews correlation coefficient (MCC) is the correlation between predicted
and gold labels: +1 perfect, 0 no better than chance, -1 total disagreement.
It stays informative when classes are imbalanced. For K > 2 classes it is
Gorodkin's R_K statistic computed from the confusion matrix.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids, shape (N,).
    references (list of int): gold class ids, shape (N,).
    sample_weight (list of float, optional): per-example weights, shape (N,).
Returns:
    matthews_correlation (float): in [-1, 1]; 0.0 when either side is constant.
Example:
    >>> mcc = evaluate.load("/path/to/nlpssl/metrics/matthews_correlation")
    >>> mcc.compute(predictions=[1, 1, 0, 0], references=[1, 0, 0, 0])
    {'matthews_correlation': 0.5773502691896258}
"""

_CITATION = """
@article{matthews1975comparison,
  title={Comparison of the predicted and observed secondary structure of {T4} phage lysozyme},
  author={Matthews, Brian W.},
  journal={Biochimica et Biophysica Acta (BBA) - Protein Structure},
  volume={405},
  number={2},
  pages={442--451},
  year={1975}
}
"""


class MatthewsCorrelation(evaluate.Metric):
    """Matthews correlation coefficient, binary or multiclass."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.matthews_corrcoef.html"],
        )

    def _compute(self, predictions, references, sample_weight=None):
        score = matthews_corrcoef(references, predictions, sample_weight=sample_weight)
        return {"matthews_correlation": float(score)}
