"""Train a registered method by name:

    python -m utils.methods adaptsegnet --restore-from ... --snapshot-dir ... --continue-train

(the same as its root script, train_gta2cityscapes_multi.py or train_weak_labels.py)."""
import utils.runtime  # noqa: F401  (first: settings that must precede paddle)

import sys

from utils.methods import METHODS, method_class
from utils.training.session import command_line, train

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in METHODS:
        sys.exit("usage: python -m utils.methods {{{}}} [flags]; --help after a name lists its flags".format(
            ",".join(METHODS)))
    name = sys.argv[1]
    sys.exit(command_line(lambda: train(method_class(name), sys.argv[2:], "python -m utils.methods " + name)))
