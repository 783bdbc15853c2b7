"""Domain adaptation with weak labels (Paul, Tsai et al., ECCV 2020): AdaptSegNet's network and
output-space discriminator, plus image-level labels on the target domain.

    # UDA: pseudo-weak labels, category-wise alignment, pixel adaptation (48.2 mIoU in the paper)
    python train_weak_labels.py --restore-from gta5_pretrained.pth --snapshot-dir snapshots/pseudoweak \
        --use-weak --use-pseudo --use-weak-cw --use-pixeladapt --continue-train
    # WDA: image labels from the target's ground truth (53.0), or one point per class (56.4)
    python train_weak_labels.py ... --use-weak --use-weak-cw --use-pixeladapt
    python train_weak_labels.py ... --use-weak --use-pointloss --use-weak-cw --use-pixeladapt

The method is utils/methods/weak_labels.py; the loop around it is the engine's, utils/training/,
shared with train_gta2cityscapes_multi.py.
"""
import utils.runtime  # noqa: F401  (first: settings that must precede paddle)

import sys

from utils.methods.weak_labels import WeakLabels
from utils.training.options import parse_settings
from utils.training.session import command_line, run_training


def get_arguments(argv=None):
    return parse_settings(WeakLabels, argv)


def main(argv=None):
    return run_training(get_arguments(argv), WeakLabels)


if __name__ == "__main__":
    sys.exit(command_line(main))
