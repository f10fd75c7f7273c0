"""F1: the harmonic mean of precision and recall, binary or averaged over classes (scikit-learn)."""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import f1_score

_DESCRIPTION = """
F1 = 2 * precision * recall / (precision + recall). For more than two classes,
`average` says how per-class scores combine: "macro" is their unweighted mean
(every class counts the same, the usual choice for imbalanced benchmarks),
"micro" pools every decision (equals accuracy for single-label data),
"weighted" weights each class by its support.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids, shape (N,).
    references (list of int): gold class ids, shape (N,).
    average (str or None): "binary" (default: the F1 of `pos_label` only),
        "macro", "micro", "weighted", or None for a list with one score per class.
    pos_label (int): the positive class when average="binary". Default 1.
    labels (list of int, optional): the classes to score and their order.
    sample_weight (list of float, optional): per-example weights, shape (N,).
    zero_division (float): the score of a class with no predicted and no gold
        example. Default 0.0, which also silences scikit-learn's warning.
Returns:
    f1 (float, or list of float when average is None).
Example:
    >>> f1 = evaluate.load("/path/to/nlpssl/metrics/f1")
    >>> f1.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2], average="macro")
    {'f1': 0.7777777777777777}
"""

_CITATION = """
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and Michel, V. and Thirion, B. and
          Grisel, O. and Blondel, M. and Prettenhofer, P. and Weiss, R. and Dubourg, V. and
          Vanderplas, J. and Passos, A. and Cournapeau, D. and Brucher, M. and Perrot, M. and
          Duchesnay, E.},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""


class F1(evaluate.Metric):
    """F1 score of class-id predictions; binary by default, macro with average="macro"."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html"],
        )

    def _compute(
        self,
        predictions,
        references,
        average="binary",
        pos_label=1,
        labels=None,
        sample_weight=None,
        zero_division=0.0,
    ):
        score = f1_score(
            references,
            predictions,
            average=average,
            pos_label=pos_label,
            labels=labels,
            sample_weight=sample_weight,
            zero_division=zero_division,
        )
        return {"f1": float(score) if np.ndim(score) == 0 else np.asarray(score).tolist()}
