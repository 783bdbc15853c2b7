"""The datasets: GTA5 and SYNTHIA (source), Cityscapes (target).

``from dataset import GTA5DataSet`` works as in the original; the classes are imported on first
use, so numpy-only tools (``dataset.classes``, ``dataset.files``) do not load Paddle.
"""
import importlib

import utils.runtime  # noqa: F401  (process settings that must precede paddle)

_HOMES = {"GTA5DataSet": "dataset.gta5_dataset", "cityscapesDataSet": "dataset.cityscapes_dataset"}
__all__ = sorted(_HOMES)


def __getattr__(name):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError("module 'dataset' has no attribute {!r}".format(name))
