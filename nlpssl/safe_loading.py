"""What resume unpickles, checked before anything is loaded: a checkpoint cannot run code.

Model weights are safetensors (Accelerate's ``save_state`` writes
``model.safetensors``; every export is ``save_pretrained``'s safetensors). The
optimizer, scaler and RNG states are pickles (``torch.save``). Accelerate loads
them with ``weights_only=True``, but it swallows any failure to load the RNG
states ("Could not load random states") and goes on with other random numbers.
So before ``accelerator.load_state`` every pickle of the checkpoint is read here
with torch's weights-only unpickler and an allow-list of the types
Accelerate's RNG state needs (numpy's generator state); anything else (a
``__reduce__`` that calls ``os.system``, say) ends the run with one line naming
the file, before a byte of it is loaded. Sharded (FSDP) checkpoints keep their
index in ``.metadata`` files that torch reads with plain ``pickle.load``: those
are read here with an unpickler that knows only torch's checkpoint metadata types.
DeepSpeed's own checkpoint files are loaded by DeepSpeed and are not checked.
"""

from __future__ import annotations

import codecs
import pathlib
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from nlpssl.errors import UserError, first_line

PICKLE_SUFFIXES = (".bin", ".pkl", ".pt", ".pth")  # optimizer.bin, random_states_N.pkl, scaler.pt, ...
_DCP_MODULES = ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem")
_DCP_GLOBALS = {
    ("torch", "Size"), ("torch.serialization", "_get_layout"), ("collections", "OrderedDict"),
    ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "PurePosixPath"), ("pathlib", "PureWindowsPath"),
}


def rng_state_globals() -> list:
    """The non-tensor types in Accelerate's RNG states (numpy's ``get_state``): safe to rebuild, nothing else is."""
    numpy_core = getattr(np, "_core", None) or np.core
    allowed = [numpy_core.multiarray._reconstruct, np.ndarray, np.dtype, codecs.encode]
    if hasattr(np, "dtypes"):
        allowed.append(np.dtypes.UInt32DType)
    return allowed


def verify_checkpoint(folder: str | Path) -> None:
    """Refuse (one line naming the file) a checkpoint whose pickles hold anything but tensors, numbers and RNG state.

    Reads every ``*.bin``/``*.pkl``/``*.pt``/``*.pth`` in ``folder`` with
    ``torch.load(weights_only=True)`` and the :func:`rng_state_globals`
    allow-list (memory-mapped: tensors are not read into memory), and every
    ``.metadata`` below it with :func:`load_checkpoint_metadata`.

    Example::

        verify_checkpoint("outputs/mlm/checkpoints/step_000300")   # then accelerator.load_state(...)
    """
    folder = Path(folder)
    for file in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in PICKLE_SUFFIXES):
        load_weights_only(file)
    for file in sorted(folder.rglob("*.metadata")):
        load_checkpoint_metadata(file)


def load_weights_only(file: Path):
    """``torch.load`` of ``file`` with the weights-only unpickler and the RNG allow-list; one line when it refuses."""
    try:
        with torch.serialization.safe_globals(rng_state_globals()):
            return torch.load(file, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(file))
    except pickle.UnpicklingError as error:
        raise UserError(_refusal(file, _refused_global(error))) from None
    except Exception as error:
        raise UserError(_damaged(file, error)) from None


def load_checkpoint_metadata(file: Path):
    """Unpickle a sharded checkpoint's ``.metadata`` allowing only torch's checkpoint metadata types; one line otherwise."""
    try:
        with file.open("rb") as handle:
            return _MetadataUnpickler(handle).load()
    except pickle.UnpicklingError as error:
        raise UserError(_refusal(file, first_line(error))) from None
    except Exception as error:
        raise UserError(_damaged(file, error)) from None


class _MetadataUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds torch.distributed.checkpoint's metadata classes, torch sizes, dtypes and paths only."""

    def find_class(self, module: str, name: str):
        if module in _DCP_MODULES:
            found = getattr(__import__(module, fromlist=[name]), name, None)
            if isinstance(found, type) and found.__module__ == module:
                return found
        if (module, name) in _DCP_GLOBALS:
            return getattr(pathlib if module == "pathlib" else __import__(module, fromlist=[name]), name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"unsupported global {module}.{name}")


def _refused_global(error: Exception) -> str:
    """The line of torch's weights-only message that names what it refused (its first line otherwise)."""
    lines = [line.strip() for line in str(error).splitlines() if "global" in line.lower() and line.strip()]
    return lines[-1] if lines else first_line(error)


def _refusal(file: Path, detail: str) -> str:
    return (
        f"{file} holds a pickle that could run code when loaded ({detail}); nothing was loaded: "
        f"resume only from checkpoints nlpssl wrote, or start a new run without train.resume"
    )


def _damaged(file: Path, error: Exception) -> str:
    return (
        f"{file} cannot be read ({first_line(error)}); the checkpoint is damaged: "
        f"resume from an earlier one (train.resume=PATH) or start a new run"
    )
