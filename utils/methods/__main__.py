"""Train a registered method by name:

    python -m utils.methods adaptsegnet --restore-from ... --snapshot-dir ... --continue-train

(the same as its root script, train_gta2cityscapes_multi.py or train_weak_labels.py). On several
GPUs, give paddle.distributed.launch this file, which it runs as a script:

    python -m paddle.distributed.launch --gpus 0,1 utils/methods/__main__.py advent ...
"""
import os
import sys

if not __package__:  # run as a file: the project's folder, not this one, comes first on the path
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import utils.runtime  # noqa: E402,F401  (first: settings that must precede paddle)

from utils.methods import METHODS, method_class  # noqa: E402
from utils.training.session import command_line, train  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in METHODS:
        sys.exit("usage: python -m utils.methods {{{}}} [flags]; --help after a name lists its flags".format(
            ",".join(METHODS)))
    name = sys.argv[1]
    sys.exit(command_line(lambda: train(method_class(name), sys.argv[2:], "python -m utils.methods " + name)))
