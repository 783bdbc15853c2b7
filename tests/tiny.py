"""A project script run with one bottleneck per ResNet stage in place of ResNet-101's 3, 4, 23, 3:
the same layer names, heads and code paths at a fraction of the work. For the tests whose point is
the engine's behaviour (stopping, resuming, validating, several ranks), not the network, which
tests/model/ and the parity tests check at full depth.

    python -m tests.tiny train_gta2cityscapes_multi.py ARGS...
    python -m tests.tiny -m utils.methods advent ARGS...
    python -m paddle.distributed.launch ... tests/tiny.py train_gta2cityscapes_multi.py ARGS...

In the test process itself, the fixture ``tiny_backbone`` (tests/conftest.py) does the same.
"""
import os
import runpy
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = ROOT  # run as a file (the launcher's way): the project, not tests/, comes first

import model.deeplab_multi  # noqa: E402  (imports utils.runtime before paddle, as the scripts do)

TINY_BLOCKS = (1, 1, 1, 1)


def use_tiny_backbone():
    model.deeplab_multi.RESNET101_BLOCKS = TINY_BLOCKS


def main(argv):
    use_tiny_backbone()
    if argv[0] == "-m":
        sys.argv = [argv[1]] + argv[2:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(argv)
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
