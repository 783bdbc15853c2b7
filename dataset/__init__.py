"""Source (GTA5) and target (Cityscapes) datasets of the adaptation."""
from dataset.gta5_dataset import GTA5DataSet
from dataset.cityscapes_dataset import cityscapesDataSet

__all__ = ["GTA5DataSet", "cityscapesDataSet"]
