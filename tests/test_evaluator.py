"""The evaluator contract: defaults of the hooks, plain functions wrapped, the package's evaluators implement it."""

from __future__ import annotations

import pytest

from nlpssl.evaluation.classification import ValidationScores
from nlpssl.evaluation.evaluator import Evaluator, FunctionEvaluator, as_evaluator
from nlpssl.evaluation.generation import TextSample
from nlpssl.evaluation.selection import KeepBest
from nlpssl.evaluation.vision import KNNMonitor


def test_hooks_default_to_never_stop_and_ignore_resume():
    class Constant(Evaluator):
        def __call__(self, objective):
            return {"score": 1.0}

    evaluator = Constant()
    assert evaluator(None) == {"score": 1.0}
    assert evaluator.should_stop is False
    assert evaluator.on_resume(10) is None
    with pytest.raises(NotImplementedError):
        Evaluator()(None)


def test_plain_functions_become_evaluators_and_evaluators_stay_themselves(tmp_path):
    wrapped = as_evaluator(lambda objective: {"seen": objective})
    assert isinstance(wrapped, FunctionEvaluator) and wrapped("o") == {"seen": "o"} and not wrapped.should_stop
    keep = KeepBest(lambda objective: {"x": 1.0}, "x", tmp_path)
    assert as_evaluator(keep) is keep


@pytest.mark.parametrize("evaluator_class", [KeepBest, KNNMonitor, TextSample, ValidationScores])
def test_the_packages_evaluators_implement_the_contract(evaluator_class):
    assert issubclass(evaluator_class, Evaluator)


def test_keep_best_overrides_both_hooks(tmp_path):
    keep = KeepBest(lambda objective: {"loss": 1.0}, "loss", tmp_path, higher_is_better=False, patience=1)
    assert type(keep).should_stop is not Evaluator.should_stop and type(keep).on_resume is not Evaluator.on_resume
    (tmp_path / "best.json").write_text('{"loss": 0.5}')
    keep.on_resume(4)
    assert keep.best == 0.5
