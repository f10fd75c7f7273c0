"""The lightly reference side of the benchmarks and parity tests.

lightly imports torchvision. The PyPI torchvision wheel is a CUDA build whose
``_C.so`` cannot load with a CPU torch, so ``import torchvision`` dies while
registering fake kernels for ops that were never defined
(``operator torchvision::nms does not exist``). Everything lightly needs from
it (PIL transforms) is pure Python, so we import torchvision without those
registrations first (:func:`nlpssl._torchvision.import_torchvision`, the one
copy of that workaround; it does nothing where torchvision imports normally).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from nlpssl._torchvision import import_torchvision


def import_lightly() -> ModuleType:
    """Import and return ``lightly``, working around a torchvision whose C++ ops cannot load.

    Example::

        lightly = import_lightly()
        loss = lightly.loss.NTXentLoss(temperature=0.5)(z1, z2)
    """
    import_torchvision()
    return importlib.import_module("lightly")
