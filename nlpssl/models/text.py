"""Build text models (BERT encoders, GPT-2 decoders, classifiers) from config dimensions or a checkpoint folder.

Every builder checks that the tokenizer fits the model's vocabulary, so a
mismatch fails with one line instead of an index error deep inside torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    ModernBertConfig,
    ModernBertForMaskedLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    RobertaPreLayerNormConfig,
    RobertaPreLayerNormForMaskedLM,
)

from nlpssl.errors import UserError, first_line
from nlpssl.sources import local_path

#: attention of the models built from dimensions: torch's fused scaled_dot_product_attention (flash / memory-efficient kernels on GPU)
ATTENTION = "sdpa"


@dataclass
class TransformerDims:
    """Transformer dimensions for a model built from scratch: a BERT encoder or a GPT-2 decoder."""

    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 1024
    dropout: float = 0.1
    max_position_embeddings: int = 512


def _check_heads(dims: TransformerDims) -> None:
    if dims.hidden_size % dims.num_heads:
        raise UserError(f"model.hidden_size={dims.hidden_size} must be divisible by model.num_heads={dims.num_heads}")


def _encoder_sizes(dims: TransformerDims, tokenizer: PreTrainedTokenizerBase) -> dict:
    """The config entries every encoder family names alike: vocabulary (the tokenizer's), width, depth, heads, MLP."""
    _check_heads(dims)
    return {
        "vocab_size": len(tokenizer), "hidden_size": dims.hidden_size, "num_hidden_layers": dims.num_layers,
        "num_attention_heads": dims.num_heads, "intermediate_size": dims.intermediate_size, "attn_implementation": ATTENTION,
    }


def bert_config(dims: TransformerDims, tokenizer: PreTrainedTokenizerBase) -> BertConfig:
    """A BertConfig of ``dims`` whose vocabulary and pad id match ``tokenizer``."""
    return BertConfig(
        **_encoder_sizes(dims, tokenizer),
        hidden_dropout_prob=dims.dropout,
        attention_probs_dropout_prob=dims.dropout,
        max_position_embeddings=dims.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
    )


def modernbert_config(dims: TransformerDims, tokenizer: PreTrainedTokenizerBase) -> ModernBertConfig:
    """A ModernBERT (Warner et al. 2024) of ``dims``: pre-norm, GeGLU, rotary positions, no biases, alternating
    local and global attention; ``intermediate_size`` is the width of each GeGLU half."""
    cls_id, sep_id = _special_id(tokenizer, "cls"), _special_id(tokenizer, "sep")
    return ModernBertConfig(
        **_encoder_sizes(dims, tokenizer),
        max_position_embeddings=dims.max_position_embeddings,
        attention_dropout=dims.dropout,
        embedding_dropout=dims.dropout,
        mlp_dropout=dims.dropout,
        pad_token_id=_special_id(tokenizer, "pad"),
        cls_token_id=cls_id, bos_token_id=cls_id, sep_token_id=sep_id, eos_token_id=sep_id,
    )


def roberta_prelayernorm_config(dims: TransformerDims, tokenizer: PreTrainedTokenizerBase) -> RobertaPreLayerNormConfig:
    """A RoBERTa with pre-layer normalisation (the ``efficient_mlm`` models of Wettig et al. 2023) of ``dims``.

    RoBERTa numbers positions from ``pad_token_id + 1``, so it gets that many extra position embeddings.
    """
    pad_id = _special_id(tokenizer, "pad")
    return RobertaPreLayerNormConfig(
        **_encoder_sizes(dims, tokenizer),
        hidden_dropout_prob=dims.dropout,
        attention_probs_dropout_prob=dims.dropout,
        max_position_embeddings=dims.max_position_embeddings + pad_id + 1,
        type_vocab_size=2,  # sentence pairs of a BERT-style tokenizer (fine-tuning on pairs)
        pad_token_id=pad_id,
    )


#: ``model.architecture`` (the ``model_type`` of the saved config.json) -> the config builder of an encoder
#: trained from scratch; all load with AutoModelForMaskedLM and the fill-mask pipeline
ENCODERS = {"bert": bert_config, "modernbert": modernbert_config, "roberta-prelayernorm": roberta_prelayernorm_config}


def _special_id(tokenizer: PreTrainedTokenizerBase, name: str) -> int:
    token_id = getattr(tokenizer, f"{name}_token_id")
    if token_id is None:
        raise UserError(f"the tokenizer has no {name} token, which this encoder needs; train one with tokenizer.kind=wordpiece")
    return token_id


def encoder_config(architecture: str, dims: TransformerDims, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    """The config of a ``model.architecture`` encoder of ``dims`` for ``tokenizer``; one-line error for an unknown name."""
    return ENCODERS[check_architecture_name(architecture)](dims, tokenizer)


def check_architecture_name(architecture: str) -> str:
    """``architecture`` if it is one of :data:`ENCODERS`, else a one-line error listing them."""
    if architecture not in ENCODERS:
        raise UserError(f"model.architecture={architecture} is not known; choose one of {', '.join(ENCODERS)}")
    return architecture


def build_mlm_model(
    tokenizer: PreTrainedTokenizerBase, dims: TransformerDims | None = None, checkpoint: str | None = None,
    architecture: str | None = None,
) -> PreTrainedModel:
    """A masked-LM model: loaded from ``checkpoint`` (folder or hub name), else an encoder of ``dims``.

    ``architecture``: one of :data:`ENCODERS` (None: ``bert``); with a checkpoint,
    None takes the checkpoint's own and a name must match it.

    Example::

        model = build_mlm_model(tokenizer, TransformerDims(hidden_size=256, num_layers=4), architecture="modernbert")
    """
    if checkpoint:
        model = load_pretrained(AutoModelForMaskedLM, checkpoint)
        _check_architecture(model, architecture, checkpoint)
    else:
        config = encoder_config(architecture or "bert", dims or TransformerDims(), tokenizer)
        model = AutoModelForMaskedLM.from_config(config)
    check_vocab_fits(model, tokenizer)
    return model


def _check_architecture(model: PreTrainedModel, architecture: str | None, checkpoint: str) -> None:
    if architecture is None:
        return
    found = model.config.model_type
    if found != check_architecture_name(architecture):
        raise UserError(
            f"model.checkpoint={checkpoint} is a {found} model but model.architecture={architecture}; "
            f"set model.architecture to null (or {found}) to continue from it"
        )


def mlm_head(model: PreTrainedModel):
    """The vocabulary head of a ``*ForMaskedLM`` model as a function (N, D) -> (N, V), for sparse prediction."""
    for name in ("cls", "lm_head"):  # BERT, RoBERTa
        head = getattr(model, name, None)
        if head is not None:
            return head
    if isinstance(model, ModernBertForMaskedLM):
        return lambda hidden: model.decoder(model.head(hidden))
    raise UserError(f"{type(model).__name__} has no known masked-LM head; set mlm.sparse_prediction=false")


def checkpoint_folder(name_or_path: str) -> Path | None:
    """The local folder ``name_or_path`` names (None for a hub name); a one-line error when it does not exist."""
    path = local_path(name_or_path)
    if path is not None and not path.is_dir():
        raise UserError(f"checkpoint folder {path} not found; pass an existing model folder")
    return path


def load_pretrained(model_class, name_or_path: str, **kwargs) -> PreTrainedModel:
    """``model_class.from_pretrained`` with a one-line error for a missing or unloadable checkpoint."""
    path = checkpoint_folder(name_or_path)
    try:
        return model_class.from_pretrained(str(path) if path is not None else name_or_path, **kwargs)
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"cannot load a {model_class.__name__} from '{name_or_path}': {first_line(error)}") from None


#: the dropout rates of encoder configs (BERT and RoBERTa kinds; ModernBERT; DistilBERT)
DROPOUT_KEYS = (
    "hidden_dropout_prob", "attention_probs_dropout_prob", "embedding_dropout", "mlp_dropout", "attention_dropout", "dropout",
)


def dropout_restored(config: PretrainedConfig, rate: float) -> dict[str, float]:
    """Config overrides that give an encoder saved without dropout ``rate`` everywhere; {} when it has some already.

    Unsupervised SimCSE's two views of a sentence differ only by dropout: from a
    model pretrained without it (cramming's choice, nlpssl's MLM recipes) they
    would be identical and the loss trivially zero.

    Example::

        encoder = load_pretrained(AutoModel, path, **dropout_restored(AutoConfig.from_pretrained(path), 0.1))
    """
    rates = {key: getattr(config, key) for key in DROPOUT_KEYS if isinstance(getattr(config, key, None), float)}
    if not rates or any(value > 0 for value in rates.values()):
        return {}
    return {key: rate for key in rates}


def check_vocab_fits(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Fail when the tokenizer can produce ids the model's embedding table does not have."""
    vocab = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab:
        raise UserError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary has {vocab}; "
            f"use the tokenizer saved with the checkpoint"
        )


def gpt2_config(dims: TransformerDims, tokenizer: PreTrainedTokenizerBase, block_size: int | None = None) -> GPT2Config:
    """A GPT2Config of ``dims`` whose vocabulary and special ids match ``tokenizer``.

    Positions cover ``max(dims.max_position_embeddings, block_size)``, so a
    recipe's blocks always fit. Dropout applies to embeddings, residuals and attention.
    """
    _check_heads(dims)
    eos_id = tokenizer.eos_token_id
    return GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=max(dims.max_position_embeddings, block_size or 0),
        n_embd=dims.hidden_size,
        n_layer=dims.num_layers,
        n_head=dims.num_heads,
        n_inner=dims.intermediate_size,
        resid_pdrop=dims.dropout,
        embd_pdrop=dims.dropout,
        attn_pdrop=dims.dropout,
        bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos_id,
        eos_token_id=eos_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id,
        attn_implementation=ATTENTION,
    )


def build_clm_model(
    tokenizer: PreTrainedTokenizerBase,
    dims: TransformerDims | None = None,
    checkpoint: str | None = None,
    block_size: int | None = None,
) -> PreTrainedModel:
    """A causal-LM model: loaded from ``checkpoint`` (folder or hub name), else a GPT-2 of ``dims``.

    A loaded model must have at least ``block_size`` positions; a built one gets them.

    Example::

        model = build_clm_model(tokenizer, TransformerDims(hidden_size=256, num_layers=4), block_size=128)
    """
    if checkpoint:
        model = load_pretrained(AutoModelForCausalLM, checkpoint)
    else:
        model = GPT2LMHeadModel(gpt2_config(dims or TransformerDims(), tokenizer, block_size))
    check_vocab_fits(model, tokenizer)
    positions = getattr(model.config, "max_position_embeddings", None)
    if block_size and positions and block_size > positions:
        raise UserError(f"data.block_size={block_size} is longer than the model's {positions} positions; lower it")
    return model


def build_classifier(
    checkpoint: str,
    tokenizer: PreTrainedTokenizerBase,
    label_names: Sequence[str] | None,
    random_init: bool = False,
) -> PreTrainedModel:
    """A sequence classifier on ``checkpoint`` with a fresh head: one logit per label, or one score.

    Any encoder checkpoint works (a ``*ForMaskedLM`` output of nlpssl, a plain
    ``AutoModel`` folder such as MiniLM, a hub name when online); its encoder
    weights are kept and the head is new. ``label_names`` None means regression
    (one output, mean squared error). ``id2label`` holds the names, so
    ``pipeline("text-classification")`` reports them. ``random_init`` builds the
    same architecture with random weights (the baseline that shows what pretraining buys).

    Example::

        model = build_classifier("outputs/mlm/final", tokenizer, ["negative", "positive"])
    """
    if label_names:
        head = {
            "num_labels": len(label_names),
            "problem_type": "single_label_classification",
            "id2label": dict(enumerate(label_names)),
            "label2id": {name: i for i, name in enumerate(label_names)},
        }
    else:
        head = {"num_labels": 1, "problem_type": "regression", "id2label": {0: "score"}, "label2id": {"score": 0}}
    if random_init:
        model = AutoModelForSequenceClassification.from_config(load_pretrained(AutoConfig, checkpoint, **head))
    else:
        model = load_pretrained(AutoModelForSequenceClassification, checkpoint, ignore_mismatched_sizes=True, **head)
    check_vocab_fits(model, tokenizer)
    return model
