"""AdaptSegNet, multi-level: adversarial adaptation in the output space, GTA5 -> Cityscapes (and
SYNTHIA -> Cityscapes, Cityscapes -> an NTHU city; --source-only: the baseline).

    python train_gta2cityscapes_multi.py --restore-from DeepLab_resnet_pretrained_init-f81d91e8.pth \
        --snapshot-dir snapshots/GTA2Cityscapes_multi --random-mirror --continue-train

Without --recipe it trains the published Paddle port's configuration (--recipe paddle-port; README:
Which recipe); --recipe authors is the authors' code's. The method's four steps are
utils/methods/adaptsegnet.py; the loop around them (resuming, logging, snapshots, validation,
stopping) is the engine's, utils/training/. The same command in every session: it resumes the run
when the snapshot directory has a snapshot and starts it otherwise.
"""
import utils.runtime  # noqa: F401  (first: settings that must precede paddle)

import sys

from utils.methods.adaptsegnet import AdaptSegNet
from utils.training.options import parse_settings
from utils.training.session import command_line, run_training


def get_arguments(argv=None):
    return parse_settings(AdaptSegNet, argv)


def main(argv=None):
    return run_training(get_arguments(argv), AdaptSegNet)


if __name__ == "__main__":
    sys.exit(command_line(main))
