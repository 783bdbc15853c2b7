import os

# PIL before paddle: Paddle 2.6 on Python 3.11 crashes when zlib is first loaded after it.
import PIL.Image  # noqa: F401
import numpy as np
import paddle
import pytest

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")

paddle.set_device("cpu")


@pytest.fixture(scope="session")
def parity():
    return dict(np.load(os.path.join(FIXTURES, "parity.npz")))
