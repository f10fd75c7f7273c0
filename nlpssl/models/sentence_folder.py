"""Write a sentence-embedding model as a folder both AutoModel and SentenceTransformer load.

Layout (what sentence-transformers reads): the Hugging Face model and tokenizer
at the root, ``modules.json`` listing Transformer -> Pooling (-> Dense),
``1_Pooling/config.json`` with the pooling mode, and for SimCSE's "cls" pooler
(the MLP kept at test time) ``2_Dense`` holding that Linear + Tanh.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import PreTrainedModel


def save_sentence_folder(
    encoder: PreTrainedModel,
    directory: str | Path,
    pooling: Literal["mean", "cls"],
    dense: nn.Linear | None = None,
    max_seq_length: int = 128,
) -> Path:
    """Save ``encoder`` with sentence-transformers metadata for ``pooling`` (+ an optional Tanh ``dense``).

    The tokenizer is saved beside it by the caller (the training loop does).

    Example::

        save_sentence_folder(model, "outputs/simcse/final", pooling="mean")
        SentenceTransformer("outputs/simcse/final").encode(["a sentence"])
    """
    directory = Path(directory)
    encoder.save_pretrained(directory)
    width = encoder.config.hidden_size
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    _write_json(directory / "1_Pooling" / "config.json", {
        "word_embedding_dimension": width,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    })
    if dense is not None:
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
        _write_json(directory / "2_Dense" / "config.json", {
            "in_features": dense.in_features,
            "out_features": dense.out_features,
            "bias": dense.bias is not None,
            "activation_function": "torch.nn.modules.activation.Tanh",
        })
        weights = {"linear.weight": dense.weight.detach().contiguous().cpu()}
        if dense.bias is not None:
            weights["linear.bias"] = dense.bias.detach().contiguous().cpu()
        save_file(weights, str(directory / "2_Dense" / "model.safetensors"))
    _write_json(directory / "modules.json", modules)
    _write_json(directory / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False})
    _write_json(directory / "config_sentence_transformers.json", {"__version__": {"pytorch": torch.__version__}, "prompts": {}})
    return directory


def _write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2))
