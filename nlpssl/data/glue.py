"""GLUE tasks from the Hugging Face Hub (``glue/<task>``, e.g. ``glue/sst2``), when online.

Each task's text column(s) are known here, so ``--data.train=glue/mrpc`` needs
no column options. Labels come back as class names, and GLUE's unlabelled test
rows (label -1) as missing labels.
"""

from __future__ import annotations

import datasets

from nlpssl.errors import UserError, first_line

GLUE_PREFIX = "glue/"
GLUE_COLUMNS = {  # task: (text column, text pair column or None)
    "cola": ("sentence", None), "sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"), "stsb": ("sentence1", "sentence2"), "mnli": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2"), "wnli": ("sentence1", "sentence2"),
}


def is_glue(source: str) -> bool:
    """Whether ``source`` names a GLUE task (``glue/<task>``)."""
    return source.startswith(GLUE_PREFIX)


def read_glue(task: str, split: str) -> tuple[datasets.Dataset, str, str | None]:
    """One split of a GLUE task from the Hub, with labels as class names; returns (rows, text column, pair column).

    ``split`` "validation" of MNLI reads ``validation_matched``. Offline, or for
    an unknown task, a one-line :class:`UserError`.

    Example::

        rows, text, pair = read_glue("mrpc", "train")   # pair == "sentence2"
    """
    if task not in GLUE_COLUMNS:
        raise UserError(f"unknown GLUE task '{task}'; choose from {', '.join(GLUE_COLUMNS)}")
    hub_split = "validation_matched" if task == "mnli" and split == "validation" else split
    try:
        table = datasets.load_dataset("nyu-mll/glue", task, split=hub_split)
    except Exception as error:  # noqa: BLE001 - offline or hub errors come in many types
        raise UserError(f"cannot load glue/{task} ({first_line(error)}); offline, pass local files") from None
    feature = table.features["label"]
    if isinstance(feature, datasets.ClassLabel):  # ids -> names; GLUE test rows are -1 (no label)
        table = table.map(lambda b: {"label": [feature.int2str(v) if v >= 0 else None for v in b["label"]]}, batched=True)
    text, pair = GLUE_COLUMNS[task]
    return table, text, pair
