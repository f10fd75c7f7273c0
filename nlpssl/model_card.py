"""Model cards: the ``README.md`` in the Hugging Face format next to every exported model.

``final/``, ``best/`` and each checkpoint's ``model/`` get one: YAML metadata
(``library_name``, ``pipeline_tag``, ``tags``, ``datasets`` and ``license``
where the recipe names its data), then what trained the model, for how long,
the run's latest evaluation figures and how to load the folder. The objective
supplies its part through class attributes (``card_pipeline_tag``,
``card_library``, ``card_description``, ``card_usage``); the run supplies the rest.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from nlpssl.atomic import TMP_SUFFIX

#: corpora whose licence is known: name -> (license metadata, a sentence for the body)
KNOWN_LICENSES = {"bible-web": ("other", "The training text, the World English Bible, is in the public domain.")}
#: config keys that name the training data, the first one present wins
DATA_KEYS = ("data.corpus", "data.train", "data.source")
#: metrics.jsonl keys that are not evaluation figures
_TRAINING_KEYS = {"step", "loss", "lr", "tokens_per_s", "images_per_s", "skipped_steps"}


def write_model_card(
    directory: Path, objective, run_dir: Path, step: int, hparams: dict | None = None,
    examples_seen: int | None = None, metrics: dict | None = None,
) -> Path:
    """Write ``directory/README.md`` for the model ``objective`` exported there after ``step`` steps.

    ``run_dir``: the run's output folder (its ``metrics.jsonl`` gives the latest
    value of each evaluation metric, updated by ``metrics``, those of an
    evaluation not logged yet). ``hparams``: the flat recipe config
    (:func:`nlpssl.config.flat_dict`), for the data's name and licence.
    ``examples_seen``: sequences or images the optimizer steps consumed.

    Example::

        write_model_card(Path("out/final"), objective, Path("out"), step=300, hparams=flat_dict(cfg))
    """
    directory, hparams = Path(directory), hparams or {}
    data = next((str(hparams[key]) for key in DATA_KEYS if hparams.get(key) not in (None, "", "None")), None)
    tag = objective.card_tag or type(objective).__name__.lower()
    meta = {"library_name": objective.card_library, "tags": ["nlpssl", tag]}
    if objective.card_pipeline_tag:
        meta["pipeline_tag"] = objective.card_pipeline_tag
    license_line = None
    if data in KNOWN_LICENSES:
        meta["license"], license_line = KNOWN_LICENSES[data]
    if data:
        meta["datasets"] = [data]
    shown = _final_name(directory.resolve())  # the card names the folder as it will be, not its temporary name
    lines = [f"# {shown.parent.name}/{shown.name}", ""]
    lines.append(f"Trained by nlpssl with {objective.card_description or type(objective).__name__} for {step} optimizer steps.")
    if examples_seen is not None:
        unit = "images" if objective.throughput_unit == "images" else "sequences"
        block = hparams.get("data.block_size") if unit == "sequences" else None
        tokens = f" (up to {examples_seen * int(block):,} tokens)" if isinstance(block, int) else ""
        lines.append(f"It saw {examples_seen:,} {unit}{tokens}.")
    if data:
        lines.append(f"Training data: `{data}`.")
    if license_line:
        lines.append(license_line)
    figures = _latest_evaluation(Path(run_dir)) | (metrics or {})
    if figures:
        lines += ["", "## Evaluation", "", "| metric | value |", "|---|---|"]
        lines += [f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |" for key, value in figures.items()]
    if objective.card_usage:
        lines += ["", "## How to load", "", "```python", objective.card_usage.format(path=shown), "```"]
    text = "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n\n" + "\n".join(lines) + "\n"
    path = directory / "README.md"
    path.write_text(text)
    return path


def _final_name(directory: Path) -> Path:
    """``run/best.tmp`` -> ``run/best``, ``checkpoints/step_000006.tmp/model`` -> ``checkpoints/step_000006/model``.

    Exports and checkpoints are written under a ``.tmp`` name and renamed when complete (:mod:`nlpssl.atomic`).
    """
    parts = list(directory.parts)
    for at in range(max(len(parts) - 2, 0), len(parts)):  # the folder and its parent: a checkpoint's model/
        parts[at] = parts[at].removesuffix(TMP_SUFFIX)
    return Path(*parts)


def _latest_evaluation(run_dir: Path) -> dict:
    """The last value of each evaluation metric in ``run_dir/metrics.jsonl`` (empty if none)."""
    path, latest = run_dir / "metrics.jsonl", {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line:
                latest |= {k: v for k, v in json.loads(line).items() if k not in _TRAINING_KEYS}
    return latest
