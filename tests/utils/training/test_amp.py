"""--amp on a CPU: Paddle's autocast does nothing here, so these tests cover the plumbing around
it (loss scaling, unscaling, skipped steps on overflow, the scale in snapshots) and the start-up
refusal; the half-precision speed and memory are measured on a GPU by python -m bench.gpu_check."""
import functools

import numpy as np
import paddle
import paddle.nn as nn
import pytest

import train_gta2cityscapes_multi as train
import utils.training.session
from tests.helpers import assert_same_snapshot, training_args
import utils.training.amp as amp_module
from utils.training.amp import MixedPrecision, unscale

# Paddle's autocast warns that it "makes no effect" on a CPU: expected here.
# Run on Paddle 2.6 too (README: the paddle-2.6 leg).
pytestmark = [pytest.mark.paddle_api, pytest.mark.filterwarnings("ignore:amp_guard")]
SELF_TEST_NETWORK = True  # utils/runtime.py: what is tested is not the network

SYNTHETIC_DATA = dict(num_source=4, num_target_train=4, num_target_val=1)
run_args = functools.partial(training_args, continue_train=True)


def linear_and_sgd(seed=0):
    paddle.seed(seed)
    net = nn.Linear(3, 2)
    return net, paddle.optimizer.SGD(learning_rate=0.1, parameters=net.parameters())


def run_step(amp, x):
    net, optimizer = linear_and_sgd()
    amp.backward(amp.forward(net, paddle.to_tensor(x)).sum())
    stepped = amp.step([optimizer], net.parameters())
    return stepped, [p.numpy() for p in net.parameters()]


def test_a_scaled_step_equals_the_float32_step():
    x = np.ones((4, 3), np.float32)
    _, plain = run_step(MixedPrecision("off"), x)
    stepped, scaled = run_step(MixedPrecision("fp16"), x)
    assert stepped
    for a, b in zip(plain, scaled):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_an_overflowing_step_is_skipped_and_the_scale_halved():
    amp = MixedPrecision("fp16", init_scale=1024.0)
    net, optimizer = linear_and_sgd()
    before = [p.numpy().copy() for p in net.parameters()]
    amp.backward(amp.forward(net, paddle.to_tensor(np.full((4, 3), 1e38, np.float32))).sum())
    assert not amp.step([optimizer], net.parameters())
    assert amp.scale == 512.0 and amp.skipped == 1
    for p, b in zip(net.parameters(), before):
        np.testing.assert_array_equal(p.numpy(), b)
        assert p.grad is None or not p.grad.numpy().any()
    assert amp.scalars() == {"amp/loss_scale": 512.0, "amp/skipped_steps": 1.0}


@pytest.mark.parametrize("fused", [True, False])
def test_unscaling_divides_in_place_and_finds_an_overflow(fused, monkeypatch):
    """Paddle's fused kernel where it exists, the plain loop where it does not: the same result."""
    if not fused:
        monkeypatch.setattr(amp_module, "_C_ops", object())
    values = [np.array([2.0, -4.0], np.float32), np.array([[8.0]], np.float32)]
    grads = [paddle.to_tensor(v) for v in values]
    assert unscale(grads, 4.0) is True
    for g, v in zip(grads, values):
        np.testing.assert_array_equal(g.numpy(), v / 4.0)
    assert unscale([paddle.to_tensor([1.0]), paddle.to_tensor([np.inf], dtype="float32")], 2.0) is False
    assert unscale([paddle.to_tensor([np.nan], dtype="float32")], 2.0) is False


def test_the_scale_grows_after_a_run_of_good_steps_and_its_state_round_trips():
    amp = MixedPrecision("fp16", init_scale=8.0, growth_interval=3)
    for _ in range(3):
        run_step(amp, np.ones((2, 3), np.float32))
    assert amp.scale == 16.0 and amp.good_steps == 0
    other = MixedPrecision("fp16")
    other.set_state_dict(amp.state_dict())
    assert other.state_dict() == amp.state_dict()
    with pytest.raises(ValueError, match="written with --amp fp16, not bf16"):
        MixedPrecision("bf16").set_state_dict(amp.state_dict())


@pytest.mark.parametrize("mode", ["fp16", "bf16"])
def test_mixed_precision_on_a_cpu_is_refused_at_start_up(data, tmp_path, mode):
    with pytest.raises(ValueError, match="--amp {}: Paddle's mixed precision runs on CUDA devices only".format(mode)):
        train.main(run_args(data, tmp_path, 2, "--amp", mode))


def test_the_loss_scale_is_part_of_the_snapshot_and_a_resumed_run_is_exact(data, tmp_path, monkeypatch):
    monkeypatch.setattr(utils.training.session, "check_amp_supported", lambda mode, use_gpu: None)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train.main(run_args(data, straight, 4, "--amp", "fp16"))
    train.main(run_args(data, resumed, 2, "--amp", "fp16"))
    train.main(run_args(data, resumed, 4, "--amp", "fp16"))
    assert_same_snapshot(str(straight), str(resumed), 4)
    state = paddle.load(str(straight / "GTA5_4_state.pdopt"), return_numpy=True)["state"]
    assert state["amp"] == {"mode": "fp16", "scale": 2.0 ** 15, "good_steps": 4, "skipped": 0}
    with pytest.raises(Exception, match="--amp off \\(snapshot: fp16\\)"):
        train.main(run_args(data, resumed, 6))
