"""Sentence-transformers folders: write one that both AutoModel and SentenceTransformer load; read how one pools.

Layout (what sentence-transformers reads): the Hugging Face model and tokenizer
at the root, ``modules.json`` listing Transformer -> Pooling (-> Dense),
``1_Pooling/config.json`` with the pooling mode, and for SimCSE's "cls" pooler
(the MLP kept at test time) ``2_Dense`` holding that Linear + Tanh.

- :func:`save_sentence_folder` writes such a folder;
- :func:`folder_pooling` reads the pooling (and Dense) any such folder declares,
  so :func:`nlpssl.models.heads.pool` embeds as the folder's own model does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import PreTrainedModel

from nlpssl.errors import UserError
from nlpssl.models.heads import pool


def save_sentence_folder(
    encoder: PreTrainedModel,
    directory: str | Path,
    pooling: Literal["mean", "cls"],
    dense: nn.Linear | dict[str, torch.Tensor] | None = None,
    max_seq_length: int = 128,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Save ``encoder`` with sentence-transformers metadata for ``pooling`` (+ an optional Tanh ``dense``).

    ``dense``: a Linear, or its ``{"weight", "bias"}`` tensors. ``state_dict``:
    the encoder's weights to write instead of its own (gathered from sharded
    processes). The tokenizer is saved beside it by the caller (the training loop does).

    Example::

        save_sentence_folder(model, "outputs/simcse/final", pooling="mean")
        SentenceTransformer("outputs/simcse/final").encode(["a sentence"])
    """
    directory = Path(directory)
    encoder.save_pretrained(directory, state_dict=state_dict)
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
        weights = dict(dense.state_dict()) if isinstance(dense, nn.Module) else dict(dense)  # {"weight": (D, D), "bias": (D,)}
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
        out_features, in_features = weights["weight"].shape
        _write_json(directory / "2_Dense" / "config.json", {
            "in_features": in_features,
            "out_features": out_features,
            "bias": "bias" in weights,
            "activation_function": "torch.nn.modules.activation.Tanh",
        })
        tensors = {f"linear.{name}": tensor.detach().contiguous().cpu() for name, tensor in weights.items()}
        save_file(tensors, str(directory / "2_Dense" / "model.safetensors"))
    _write_json(directory / "modules.json", modules)
    _write_json(directory / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False})
    _write_json(directory / "config_sentence_transformers.json", {"__version__": {"pytorch": torch.__version__}, "prompts": {}})
    return directory


def folder_pooling(model_dir: str | Path):
    """How a sentence-transformers folder pools: "cls", "mean", a function (pooling then Dense), or None.

    None means a plain model folder (no ``modules.json``). A Dense module after
    the pooling (SimCSE's "cls" MLP, for one) is applied as the folder applies it;
    any other module (max pooling, ...) fails, so figures from :func:`pool` cannot
    silently differ from the model's own.

    Example::

        folder_pooling("all-MiniLM-L6-v2/")  # "mean"
    """
    model_dir = Path(model_dir)
    modules_file = model_dir / "modules.json"
    modules = json.loads(modules_file.read_text()) if modules_file.is_file() else []
    kind = {m["type"].rsplit(".", 1)[-1]: m["path"] for m in modules}
    extra = [name for name in kind if name not in ("Transformer", "Pooling", "Normalize", "Dense")]
    if extra:
        raise UserError(f"{modules_file} has modules beyond pooling that pool() does not apply ({', '.join(extra)}); pass --pooling")
    config_file = model_dir / kind.get("Pooling", "1_Pooling") / "config.json"
    if not config_file.is_file():
        return None
    config = json.loads(config_file.read_text())
    # sentence-transformers >= 6 writes "pooling_mode": "mean"; older versions one boolean per mode
    modes = config.get("pooling_mode") or [k[len("pooling_mode_") :] for k, v in config.items() if k.startswith("pooling_mode_") and v is True]
    modes = [modes] if isinstance(modes, str) else list(modes)
    names = {"cls": "cls", "cls_token": "cls", "mean": "mean", "mean_tokens": "mean"}
    if len(modes) != 1 or modes[0] not in names:
        raise UserError(f"{config_file} sets pooling {', '.join(modes) or 'none'}; only cls or mean is supported, pass --pooling")
    if "Dense" not in kind:
        return names[modes[0]]
    dense = _load_dense(model_dir / kind["Dense"])
    method = names[modes[0]]
    return lambda last_hidden, attention_mask: dense(pool(last_hidden, attention_mask, method))


def _load_dense(folder: Path) -> nn.Module:
    """A sentence-transformers Dense module (Linear + Tanh or identity) as a torch module."""
    from safetensors.torch import load_file

    config = json.loads((folder / "config.json").read_text())
    activation = config.get("activation_function", "torch.nn.modules.activation.Tanh")
    activations = {"torch.nn.modules.activation.Tanh": nn.Tanh(), "torch.nn.modules.linear.Identity": nn.Identity()}
    if activation not in activations:
        raise UserError(f"{folder}: Dense activation {activation} is not supported; pass --pooling")
    linear = nn.Linear(config["in_features"], config["out_features"], bias=config.get("bias", True))
    weights_file = folder / "model.safetensors"
    weights = load_file(str(weights_file)) if weights_file.is_file() else torch.load(folder / "pytorch_model.bin", weights_only=True)
    linear.load_state_dict({k.removeprefix("linear."): v for k, v in weights.items()})
    return nn.Sequential(linear, activations[activation]).eval()


def _write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2))
