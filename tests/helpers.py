"""Shared by the tests: seeded weights named the way the PyTorch reference names them."""
from tests.fixtures.seeded_weights import seeded_state_dict

_PADDLE_TO_TORCH_BUFFERS = {"_mean": "running_mean", "_variance": "running_var"}


def torch_style_shapes(model):
    """{PyTorch state-dict name: shape} of a Paddle model, as the reference would name it."""
    shapes = {}
    for name, value in model.state_dict().items():
        module, _, leaf = name.rpartition(".")
        shapes[module + "." + _PADDLE_TO_TORCH_BUFFERS.get(leaf, leaf)] = tuple(value.shape)
    return shapes


def seeded_torch_state(model, seed=0):
    """The weights the parity fixtures were made with, as a PyTorch-named state dict."""
    return seeded_state_dict(torch_style_shapes(model), seed)
