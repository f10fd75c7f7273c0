"""Typed configuration: a yaml recipe, then dotted command-line overrides.

    python scripts/pretrain_mlm.py --config configs/mlm.yaml --train.lr=1e-3 --mlm.mask_prob 0.2

Precedence: dataclass defaults < yaml recipe < ``--section.key=value``.
Unknown sections or keys fail with one line that lists the valid ones; values
are coerced by the field's declared type (so ``5e-4`` is a float and ``no`` is
a string where the field is a string). Only scripts see a Config; library code
takes plain arguments.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from nlpssl.atomic import atomic_write_text
from nlpssl.errors import UserError, first_line

T = TypeVar("T")

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def load_config(schema: type[T], argv: list[str], default_recipe: str | Path | None = None) -> T:
    """Build a ``schema`` dataclass from a yaml recipe and dotted overrides.

    Args:
        schema: a dataclass whose fields are section dataclasses.
        argv: command-line words, e.g. ``["--config", "a.yaml", "--train.lr=1e-3"]``.
        default_recipe: yaml used when ``--config`` is not given.

    Example::

        cfg = load_config(MLMRecipe, sys.argv[1:], "configs/mlm.yaml")
        cfg.train.lr  # float
    """
    recipe_path, overrides = _parse_argv(argv)
    recipe_path = recipe_path or default_recipe
    values: dict[str, Any] = {}
    if recipe_path is not None:
        values = _read_yaml(Path(recipe_path))
    for dotted, raw in overrides:
        section, _, key = dotted.partition(".")
        if not key:
            raise UserError(f"override --{dotted} needs the form --section.key=value")
        if values.get(section) in (None, ""):  # absent, or an empty `section:` in the yaml
            values[section] = {}
        if not isinstance(values[section], dict):
            raise UserError(f"section '{section}' must be a mapping")
        values[section][key] = raw
    return build(schema, values, where="config")


def build(schema: type[T], values: dict[str, Any], where: str) -> T:
    """Instantiate dataclass ``schema`` from nested ``values``, checking keys and types."""
    if not isinstance(values, dict):
        raise UserError(f"{where}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(schema)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UserError(
            f"{where}: unknown key '{unknown[0]}'; valid keys are: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(schema)
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _coerce(value, hints[name], f"{where}.{name}" if where != "config" else name)
    return schema(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """Nested plain-dict view of a config dataclass (for yaml and logging)."""
    return dataclasses.asdict(config)


def flat_dict(config: Any) -> dict[str, Any]:
    """The config as one level of ``section.key`` hyperparameters (for experiment trackers).

    Numbers, strings and booleans stay as they are; lists, dicts and None become
    strings (TensorBoard's hparams take only scalars).

    Example::

        flat_dict(cfg)   # also flat_dict({"train": cfg.train}); {"train.lr": 0.0005, "train.resume": "", "data.corpus": "bible-web", ...}
    """
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        if isinstance(value, dict) and value and prefix.count(".") < 1:
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif prefix:
            flat[prefix] = value if isinstance(value, (bool, int, float, str)) else str(value)

    walk("", config)
    return flat


def save_config(config: Any, path: str | Path) -> None:
    """Write the resolved config as yaml (next to the checkpoints), through a temporary file renamed when complete.

    A resume compares its config with this file (:mod:`nlpssl.run_folder`).
    """
    atomic_write_text(path, config_yaml(config))


def config_yaml(config: Any) -> str:
    """The resolved config as the yaml text :func:`save_config` writes."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def _parse_argv(argv: list[str]) -> tuple[str | None, list[tuple[str, str]]]:
    recipe, overrides, words = None, [], list(argv)
    while words:
        word = words.pop(0)
        if not word.startswith("--"):
            raise UserError(f"unexpected argument '{word}'; use --config FILE or --section.key=value")
        key, has_value, value = word[2:].partition("=")
        if not has_value:
            if not words or words[0].startswith("--"):
                raise UserError(f"--{key} needs a value")
            value = words.pop(0)
        if key == "config":
            recipe = value
        else:
            overrides.append((key, value))
    return recipe, overrides


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"config file {path} not found; pass an existing yaml with --config")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not valid UTF-8 at byte offset {error.start}; save the recipe as UTF-8") from None
    except OSError as error:
        raise UserError(f"cannot read config file {path} ({first_line(error)})") from None
    try:
        # Every scalar is read as text and coerced by the field's type, so
        # `5e-4` becomes a float and `no` stays "no" in a string field.
        data = yaml.load(text, Loader=yaml.BaseLoader) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = getattr(error, "problem", None) or first_line(error)
        raise UserError(f"{path}{line}: not valid yaml ({problem})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe must be a mapping of sections")
    return data


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        return build(annotation, value if value not in (None, "") else {}, where)  # yaml's `section:` with nothing under it
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in {"", "none", "null", "~"}):
            return None
        return _coerce(value, options[0], where)
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise UserError(f"{where}: '{value}' is not one of {', '.join(map(str, choices))}")
        return value
    if origin in (list, tuple):
        (item_type, *_) = typing.get_args(annotation) or (str,)
        items = value.split(",") if isinstance(value, str) else list(value)
        coerced = [_coerce(v.strip() if isinstance(v, str) else v, item_type, where) for v in items if v != ""]
        return tuple(coerced) if origin is tuple else coerced
    return _coerce_scalar(value, annotation, where)


def _coerce_scalar(value: Any, annotation: Any, where: str) -> Any:
    try:
        if annotation is bool:
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text in _TRUE | _FALSE:
                return text in _TRUE
            raise ValueError
        if annotation is int:
            return _as_int(value)
        if annotation is float:
            if isinstance(value, bool) or not math.isfinite(number := float(value)):
                raise ValueError
            return number
        if annotation is str:
            if isinstance(value, (list, dict)):
                raise ValueError  # a yaml list or mapping where one value belongs
            return value if isinstance(value, str) else str(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: cannot read '{value}' as {annotation.__name__}") from None
    return value


def _as_int(value: Any) -> int:
    """An integer, also when written as a float (``1e5``, ``10.0``); ValueError for ``1e-3``, ``2.5``, ``nan``, words."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    number = float(value)
    if not number.is_integer():  # also false for nan and inf
        raise ValueError
    return int(number)
