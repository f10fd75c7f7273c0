"""Import a torchvision whose compiled ops cannot load (the PyPI wheel beside a CPU-only torch).

The PyPI torchvision wheel is a CUDA build: with a CPU torch its ``_C.so``
cannot load and ``import torchvision`` dies while registering fake kernels for
ops that were never defined (``operator torchvision::nms does not exist``).
transformers imports torchvision whenever it is installed, so that also takes
down its vision models (ViT-MAE). Everything used here (transformers' models,
PIL transforms) is pure Python: :func:`import_torchvision` skips the fake-kernel
registrations of the missing ops and imports the rest. It changes nothing where
torchvision imports normally; the missing ops (nms, roi_align) still fail if called.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Callable, Iterator

import torch

MISSING_OPERATOR = "does not exist"


def ensure_torchvision_importable() -> None:
    """Import torchvision now (tolerating missing compiled ops) if it is installed; no-op otherwise."""
    if importlib.util.find_spec("torchvision") is not None:
        import_torchvision()


def import_torchvision() -> ModuleType:
    """Import ``torchvision``; if its compiled ops are missing, import it without their fake kernels.

    transformers imports torchvision too (``image_utils``) when it is installed,
    so call this before importing ``transformers.modeling_utils`` in such an environment.

    Example::

        torchvision = import_torchvision()
        crop = torchvision.transforms.v2.RandomResizedCrop(32)
    """
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as error:
        if MISSING_OPERATOR not in str(error):
            raise
    _forget_modules("torchvision")
    with _fake_registration_skips_missing_ops("torchvision::"):
        return importlib.import_module("torchvision")


def _forget_modules(package: str) -> None:
    """Drop a half-imported package and its submodules from ``sys.modules`` so it imports afresh."""
    for name in [name for name in sys.modules if name == package or name.startswith(package + ".")]:
        del sys.modules[name]


def _operator_exists(qualified_name: str) -> bool:
    """Whether ``namespace::op`` has a schema in the dispatcher (it does not when its library failed to load)."""
    try:
        torch._C._dispatch_find_schema_or_throw(qualified_name, "")
    except RuntimeError:
        return False
    return True


@contextlib.contextmanager
def _fake_registration_skips_missing_ops(namespace_prefix: str) -> Iterator[None]:
    """Make ``torch.library.register_fake`` a no-op for ops under ``namespace_prefix`` that do not exist."""
    original = torch.library.register_fake

    def register_fake_if_defined(op, func: Callable | None = None, /, **kwargs):
        if isinstance(op, str) and op.startswith(namespace_prefix) and not _operator_exists(op.split(".")[0]):
            return func if func is not None else (lambda kernel: kernel)
        return original(op, func, **kwargs)

    torch.library.register_fake = register_fake_if_defined
    try:
        yield
    finally:
        torch.library.register_fake = original
