"""The Objective contract the training loop relies on; it never names a method."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from torch import nn


class Objective(nn.Module):
    """A model plus the loss that trains it.

    ``forward(batch)`` returns a dict holding ``loss`` (a scalar tensor): the
    mean over the batch's :meth:`count_targets` targets; other entries are
    logged. ``num_tokens`` (``num_images`` where :attr:`throughput_unit` is
    "images") drives the throughput; counts live on the batch's device.
    """

    #: report exp(eval loss) as perplexity (true for language-model objectives)
    eval_perplexity: bool = False
    #: what throughput counts: ``forward`` may return ``num_<unit>`` and the loop logs ``<unit>_per_s``
    throughput_unit: str = "tokens"
    #: model card (:mod:`nlpssl.model_card`): the Hub's pipeline tag, loading library, the objective's tag and
    #: words, and a snippet loading the exported folder (``{path}`` is filled in)
    card_pipeline_tag: str | None = None
    card_library: str = "transformers"
    card_tag: str | None = None  # None: the class name in lower case
    card_description: str | None = None
    card_usage: str = ""
    #: counts ``forward`` returns under ``eval_counts`` in evaluation mode, summed over the evaluation
    #: batches and logged as ``eval_<name>`` divided by the number of targets (e.g. top-1 hits -> accuracy)
    eval_count_names: tuple[str, ...] = ()

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def count_targets(self, batch: dict) -> torch.Tensor:
        """How many targets ``loss`` averages over in ``batch`` (a 0-dim tensor on the batch's device).

        Computed from the batch before the forward pass: the loop all-reduces the
        counts of an optimizer step's micro-batches once and weights each
        micro-batch's mean loss by its count, so the gradient is that of the mean
        over every target of the step on every process. The default is one target
        per row, the right count for losses that average over rows; token-level
        objectives count their labels.

        Example::

            objective.count_targets(batch)  # tensor(37): masked positions of an MLM batch
        """
        rows = next(value for value in batch.values() if isinstance(value, torch.Tensor))  # (B, ...)
        return torch.tensor(rows.shape[0], device=rows.device)

    def on_optimizer_step(self, progress: float) -> None:
        """Called once after each real optimizer step; ``progress`` runs from 0 to 1.

        EMA teachers and queues update here.
        """

    def export(self, directory: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:  # pragma: no cover - abstract
        """Write the trained model as a folder other tools load (a HF checkpoint).

        ``state_dict``: this objective's weights as gathered on every process
        (``accelerator.get_state_dict``: whole even when FSDP or ZeRO-3 shard the
        parameters), written instead of the module's own; None: the module's own.
        """
        raise NotImplementedError

    @property
    def _no_split_modules(self) -> list[str]:
        """Layer classes FSDP's transformer auto-wrap makes one unit each: ``BertLayer``, ``GPT2Block``, ...

        The classes the wrapped Hugging Face models keep whole, less those holding a
        parameter tied to one outside them (BERT's word embeddings are its MLM
        decoder's weight): FSDP2 cannot split tied parameters across units. FSDP
        reads this from the model it is given, the objective.
        """
        wanted = set()
        for module in self.modules():
            if module is not self and not isinstance(module, Objective):
                wanted.update(getattr(module, "_no_split_modules", None) or ())
        uses = Counter(id(p) for _, p in self.named_parameters(remove_duplicate=False))
        tied = set()
        for module in self.modules():
            inside = Counter(id(p) for _, p in module.named_parameters(remove_duplicate=False))
            if type(module).__name__ in wanted and any(count < uses[key] for key, count in inside.items()):
                tied.add(type(module).__name__)
        return sorted(wanted - tied)


def sub_state_dict(state_dict: dict[str, torch.Tensor] | None, prefix: str) -> dict[str, torch.Tensor] | None:
    """The entries of a submodule (``prefix``, e.g. "model") with the prefix removed; None stays None.

    Example::

        sub_state_dict({"model.bert.pooler.dense.bias": b, "head.weight": w}, "model")   # {"bert.pooler.dense.bias": b}
    """
    if state_dict is None:
        return None
    start = prefix + "."
    return {key[len(start) :]: value for key, value in state_dict.items() if key.startswith(start)}


class ModelObjective(Objective):
    """An objective around one Hugging Face model (``self.model``), exported as that model's checkpoint."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def export(self, directory: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        self.model.save_pretrained(directory, state_dict=sub_state_dict(state_dict, "model"))
