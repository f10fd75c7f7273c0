"""The SST-2 accuracy protocol of the benchmarks: selection on a split held out of train, SST-2 dev as the test figure.

``load_sst2`` gives the three splits, ``SelectOnValidation`` selects the same
way for nlpssl's loop and the Hugging Face Trainer, ``dev_accuracy`` is the
reported figure.
"""

from __future__ import annotations

import time

from common import SHARED_DATA

SST2_LABELS = ["negative", "positive"]
SST2_VALIDATION_FRACTION = 0.013  # held out of SST-2 train for selection: about 875 of its 67,349 sentences


def load_sst2(tokenizer, train_examples: int, seed: int, max_length: int = 128):
    """SST-2 for an accuracy benchmark, tokenized: ``LabelledSplits`` of train, validation and test.

    * train: a seeded subset of ``train_examples`` sentences of SST-2 train;
    * validation: a seeded held-out share of SST-2 train (about 875 sentences,
      never in train): what model selection may look at;
    * test: SST-2 dev (872 sentences, GLUE's reported split), the figure a
      benchmark reports; nothing is selected on it.

    Each seed draws its own subset and held-out split, so a spread over seeds
    covers the data drawn as well as the initialisation.
    """
    from nlpssl.data.classification import Columns, load_labelled_splits, tokenize_splits

    root = SHARED_DATA / "sst2"
    if not root.is_dir():
        raise SystemExit(f"error: {root} not found; this benchmark needs ../shared/data (or NLPSSL_SHARED_DATA)")
    splits = load_labelled_splits(
        str(root / "train.tsv"), test=str(root / "dev.tsv"), columns=Columns(text="sentence|content"),
        label_names=SST2_LABELS, validation_fraction=SST2_VALIDATION_FRACTION, max_train_examples=train_examples, seed=seed,
    )
    return tokenize_splits(splits, tokenizer, max_length)


def accuracy(model, rows, tokenizer) -> float:
    """Accuracy of a sequence classifier on tokenized labelled ``rows`` (the shipped `evaluate` module)."""
    from nlpssl.data.collators import ClassificationCollator
    from nlpssl.evaluation.classification import predict_logits, score_logits
    from nlpssl.objectives.classification import SequenceClassification

    logits = predict_logits(SequenceClassification(model), rows, ClassificationCollator(tokenizer))
    return score_logits(logits, rows["labels"], SST2_LABELS)["accuracy"]


def dev_accuracy(model, splits, tokenizer) -> float:
    """Accuracy on SST-2 dev, which :func:`load_sst2` gives as ``splits.test``: the reported figure."""
    return accuracy(model, splits.test, tokenizer)


class SelectOnValidation:
    """Model selection on the held-out validation split, identical for nlpssl and the Trainer.

    Every ``every`` optimizer steps (and at the last) the model's validation
    accuracy is computed; the best weights are kept in memory and restored at
    the end (:meth:`restore`). The time spent here is summed in ``seconds``, so
    a throughput figure can leave evaluation out on both sides alike. nlpssl's
    loop calls it as an evaluator (:meth:`evaluator`), the Trainer as a callback
    (:meth:`trainer_callback`).

    Example::

        selection = SelectOnValidation(splits.validation, tokenizer, every=63, max_steps=189)
        train(objective, rows, collate, cfg, evaluators=[selection.evaluator()])
        selection.restore(objective.model)
    """

    def __init__(self, rows, tokenizer, every: int, max_steps: int) -> None:
        self.rows, self.tokenizer, self.every, self.max_steps = rows, tokenizer, every, max_steps
        self.best: float | None = None
        self.best_step, self.evaluations, self.seconds = 0, 0, 0.0
        self._best_state: dict | None = None

    def consider(self, model) -> float:
        """Validation accuracy of ``model`` now; its weights are kept if it is the best so far."""
        started = time.perf_counter()
        self.evaluations += 1
        value = accuracy(model, self.rows, self.tokenizer)
        if self.best is None or value > self.best:
            self.best, self.best_step = value, min(self.evaluations * self.every, self.max_steps)
            self._best_state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
        self.seconds += time.perf_counter() - started
        return value

    def restore(self, model) -> None:
        """Load the best weights seen into ``model``."""
        if self._best_state is None:
            raise RuntimeError("no evaluation ran: nothing to restore")
        model.load_state_dict(self._best_state)

    def evaluator(self):
        """For ``nlpssl.train``'s ``evaluators`` (with ``eval_every=every``): logs ``val_accuracy``."""
        return lambda objective: {"val_accuracy": self.consider(objective.model)}

    def trainer_callback(self):
        """A ``TrainerCallback`` that evaluates at the same steps as nlpssl's loop."""
        from transformers import TrainerCallback

        selection = self

        class Select(TrainerCallback):
            def on_step_end(self, args, state, control, model=None, **kwargs):
                if state.global_step % selection.every == 0 or state.global_step == state.max_steps:
                    selection.consider(model)

        return Select()
