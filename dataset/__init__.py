"""The datasets: GTA5 and SYNTHIA (source), Cityscapes (target), as ``from dataset import
GTA5DataSet`` in the original. They read files with numpy and Pillow only; dataset/loader.py
batches them for Paddle."""
import utils.runtime  # noqa: F401  (process settings that must precede paddle)
from dataset.cityscapes_dataset import cityscapesDataSet
from dataset.gta5_dataset import GTA5DataSet

__all__ = ["GTA5DataSet", "cityscapesDataSet"]
