"""Recipes: each one against the run it names, resumed exactly, and chosen the way users expect.

Two iterations of every recipe are compared with PyTorch running the same configuration in
float64 (tests/fixtures/recipes.npz, made by tests/fixtures/make_recipe_fixtures.py): the authors'
model.train() BN and PyTorch 0.4 SGD over their duplicated parameter list, the paper's groups,
and the Paddle port's frozen BN with one SGD group and its learning-rate floor.
"""
import argparse
import json
import os

import numpy as np
import paddle
import pytest

import train_gta2cityscapes_multi as train
import train_weak_labels
from model.deeplab_multi import FrozenAffineBatchNorm2D
from tests.fixtures.seeded_weights import seeded_training_batches
from tests.helpers import (FIXTURES, assert_same_snapshot, logged_losses, named_batches, seeded_torch_state,
                           training_args)
from utils.files.checkpoint import CheckpointError, atomic_save
from utils.files.weights import read_paddle_pickle
from utils.methods import adaptsegnet
from utils.methods.adaptsegnet import AdaptSegNet
from utils.methods.weak_labels import WeakLabels
from utils.training.optimizer import set_learning_rates
from utils.training.options import SHARED_PARAMS
from utils.training.params import named, recipe_values

pytestmark = pytest.mark.paddle_api  # run on Paddle 2.6 too (README: the paddle-2.6 leg)
SELF_TEST_NETWORK = True  # utils/runtime.py, as the fixture's networks

FIXTURE = os.path.join(FIXTURES, "recipes.npz")
RELATIVE_TOLERANCE = 2e-2  # of a change, float32 against float64
ADAPTSEGNET_RECIPES = sorted(r.name for r in AdaptSegNet.recipes)
SYNTHETIC_DATA = dict(num_source=4, num_target_train=4, num_target_val=1)


def values_of(method, recipe):
    """{flag's dest: value} that ``recipe`` of ``method`` sets."""
    return recipe_values(SHARED_PARAMS + list(method.params), named(method.recipes, recipe))


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(FIXTURE))


def recipe_arguments(recipe, reference, tmp_path):
    """The script's arguments for the fixture's task: its class count is a class file's."""
    width, height = reference["source_size"]
    target_width, target_height = reference["target_size"]
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"classes": ["class{}".format(c) for c in range(int(reference["num_classes"]))]}))
    return train.get_arguments([
        "--recipe", recipe, "--from-scratch", "--source", "custom", "--target", "custom", "--classes", str(classes),
        "--data-dir", str(tmp_path), "--data-dir-target", str(tmp_path),
        "--input-size", "{},{}".format(width, height),
        "--input-size-target", "{},{}".format(target_width, target_height),
        "--lambda-adv-target1", "0", "--lambda-adv-target2", "0", "--learning-rate", str(float(reference["learning_rate"]))])


def two_iterations(recipe, reference, tmp_path):
    """The recipe's networks and optimizers as the script builds them (the fixture's small network:
    SELF_TEST_NETWORK), after two iterations on the fixture's batches."""
    args = recipe_arguments(recipe, reference, tmp_path)
    model, sgd, discriminators = adaptsegnet.build_networks(args)
    method = AdaptSegNet.on_networks(args, {"model": model}, [sgd])
    method.add_discriminators(discriminators)
    model.set_state_dict(paddle_names(seeded_torch_state(model, int(reference["weight_seed"]))))
    before = {name: value.numpy().copy() for name, value in model.state_dict().items()}
    data = seeded_training_batches(args.batch_size, 2, reference["source_size"], reference["target_size"],
                                   int(reference["num_classes"]), int(reference["data_seed"]), reference["input_scale"])
    losses = []
    for iteration, (source, labels, target) in enumerate(data):
        batch = [((paddle.to_tensor(source), paddle.to_tensor(labels)), (paddle.to_tensor(target),))]
        logged, _ = method.run_step(named_batches(batch), iteration)
        losses.append([logged["seg1"], logged["seg2"]])
    return args, model, before, losses


def paddle_names(torch_state):
    return {key.replace("running_mean", "_mean").replace("running_var", "_variance"): value
            for key, value in torch_state.items()}


def relative(ours, theirs):
    return float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))


@pytest.mark.parametrize("recipe,batch_size,bn", [("authors", 1, "train"), ("paper", 1, "train"),
                                                  ("paddle-port", 2, "frozen")])
def test_two_iterations_of_each_recipe_match_its_reference_run(recipe, batch_size, bn, reference, tmp_path):
    args, model, before, losses = two_iterations(recipe, reference, tmp_path)
    assert (args.batch_size, args.bn) == (batch_size, bn)
    np.testing.assert_allclose(losses, reference[recipe + "/losses"], rtol=1e-4)
    after = {name: value.numpy() for name, value in model.state_dict().items()}
    worst, moved = 0.0, 0
    trained = [name for name, p in model.named_parameters() if not p.stop_gradient]
    for name in trained:
        change = (after[name] - before[name]).ravel().astype(np.float64)
        expected = reference["{}/change/{}".format(recipe, name)]
        if reference["{}/change_norm/{}".format(recipe, name)] == 0:  # classifier branches the forward never uses
            assert not change.any(), name
            continue
        worst = max(worst, relative(change[reference["{}/index/{}".format(recipe, name)]], expected),
                    abs(np.linalg.norm(change) / reference["{}/change_norm/{}".format(recipe, name)] - 1))
        moved += 1
    assert moved == len(trained) - 8  # branches 2 and 3 of both classifiers: weight and bias
    statistics = [name for name in after if name.endswith(("_mean", "_variance"))]
    if bn == "train":
        for name in statistics:
            torch_name = name.replace("_mean", "running_mean").replace("_variance", "running_var")
            expected = reference[recipe + "/bn/" + torch_name].astype(np.float64) - before[name]
            worst = max(worst, relative(after[name] - before[name], expected))
    else:
        for name in statistics:
            np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    print("{}: {} parameters and {} BN statistics, largest relative error of the change {:.2e}".format(
        recipe, moved, len(statistics), worst))
    assert worst <= RELATIVE_TOLERANCE


def test_the_recipes_train_differently(reference):
    """The fixture is not three copies of one run: the backbone moves 3-6x as far in the
    authors' run as in the paper's, and the port's frozen BN gives other losses altogether."""
    name = "layer3.0.conv2.weight"
    ratio = reference["authors/change_norm/" + name] / reference["paper/change_norm/" + name]
    assert 2.5 < ratio < 7
    assert np.allclose(reference["authors/change_norm/layer6.conv2d_list.0.weight"],
                       reference["paper/change_norm/layer6.conv2d_list.0.weight"], rtol=0.05)
    assert abs(reference["paddle-port/losses"][0, 1] - reference["authors/losses"][0, 1]) > 0.1


def test_batchnorm_in_training_mode_moves_running_statistics_as_pytorch():
    """Batch statistics normalise; the running variance moves by the unbiased batch variance."""
    bn = FrozenAffineBatchNorm2D(3, statistics="train")
    bn._mean.set_value(np.array([0.1, -0.2, 0.3], np.float32))
    bn._variance.set_value(np.array([1.0, 2.0, 0.5], np.float32))
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 7)).astype(np.float32)
    tensor = paddle.to_tensor(x, stop_gradient=False)
    out = bn(tensor)
    out.sum().backward()
    mean, variance = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    normalised = (x - mean[None, :, None, None]) / np.sqrt(variance[None, :, None, None] + 1e-5)
    np.testing.assert_allclose(out.numpy(), normalised, atol=1e-5)
    np.testing.assert_allclose(bn._mean.numpy(), 0.9 * np.array([0.1, -0.2, 0.3]) + 0.1 * mean, rtol=1e-6)
    np.testing.assert_allclose(bn._variance.numpy(), 0.9 * np.array([1.0, 2.0, 0.5]) + 0.1 * x.var(axis=(0, 2, 3), ddof=1),
                               rtol=1e-6)
    assert tensor.grad is not None and bn.weight.grad is None
    bn.eval()
    frozen_mean = bn._mean.numpy().copy()
    bn(tensor)
    np.testing.assert_array_equal(bn._mean.numpy(), frozen_mean)


def test_batch_statistics_need_more_than_one_value_per_channel():
    bn = FrozenAffineBatchNorm2D(2, statistics="train")
    with pytest.raises(ValueError, match="--bn frozen"):
        bn(paddle.ones([1, 2, 1, 1]))


def test_defaults_are_the_recipes_that_reached_their_published_numbers():
    adapt = train.get_arguments(["--from-scratch"])
    assert adapt.recipe == "paddle-port"
    expected = values_of(AdaptSegNet, "paddle-port")
    assert {k: getattr(adapt, k) for k in expected} == expected
    assert (adapt.batch_size, adapt.bn, adapt.sgd_groups, adapt.end_learning_rate) == (
        2, "frozen", "single", 1e-4)
    weak = train_weak_labels.get_arguments(["--from-scratch", "--use-weak", "--use-pseudo"])
    assert weak.recipe == "authors"
    expected = values_of(WeakLabels, "authors")
    assert {k: getattr(weak, k) for k in expected} == expected
    assert (weak.batch_size, weak.bn, weak.sgd_groups, weak.num_steps_stop) == (1, "train", "original", 120000)


def test_explicit_flags_override_the_recipe():
    args = train.get_arguments(["--from-scratch", "--recipe", "authors", "--batch-size", "2", "--bn", "frozen"])
    assert (args.recipe, args.batch_size, args.bn, args.sgd_groups) == ("authors", 2, "frozen", "original")
    assert sorted(args.explicit) == ["batch_size", "bn", "recipe"]


def test_learning_rate_floor_of_the_paddle_port_is_paddles_polynomial_decay():
    args = train.get_arguments(["--from-scratch"])
    scheduler = paddle.optimizer.lr.PolynomialDecay(args.learning_rate, decay_steps=args.num_steps, power=args.power)
    optimizer = argparse.Namespace(set_lr=lambda lr: None)
    for iteration in range(0, 150001, 25000):
        scheduler.last_epoch = iteration
        rates = set_learning_rates([optimizer, optimizer], iteration, args)
        assert rates["lr/G"] == pytest.approx(scheduler.get_lr(), rel=1e-12)
        assert rates["lr/D"] == pytest.approx(1e-4, rel=1e-12)
    assert rates["lr/G"] == pytest.approx(1.658e-4, rel=1e-3)


# -- on disk: the log, resuming, snapshots from before recipes ----------------------------------

def log_lines(snapshot_dir):
    with open(os.path.join(str(snapshot_dir), "train.log")) as f:
        return f.read().splitlines()


@pytest.mark.parametrize("recipe", ADAPTSEGNET_RECIPES)
def test_every_recipe_resumes_bit_exactly_with_its_running_statistics(data, recipe, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train.main(training_args(data, straight, 4, "--recipe", recipe, mirror=True)) == 0
    assert train.main(training_args(data, resumed, 2, "--recipe", recipe, mirror=True)) == 0
    # The same command without --recipe continues the run as it started.
    assert train.main(training_args(data, resumed, 4, mirror=True, continue_train=True)) == 0
    assert_same_snapshot(straight, resumed, 4)
    assert logged_losses(resumed) == logged_losses(straight)
    weights = paddle.load(str(straight / "GTA5_4.pdparams"), return_numpy=True)
    moved = not np.allclose(weights["layer4.0.bn3._mean"], paddle.load(
        str(straight / "GTA5_2.pdparams"), return_numpy=True)["layer4.0.bn3._mean"])
    assert moved == (values_of(AdaptSegNet, recipe)["bn"] == "train")
    saved = read_paddle_pickle(str(straight / "GTA5_4_state.pdopt"))["extra"]["args"]
    assert {k: saved[k] for k in ("recipe", "bn", "sgd_groups", "batch_size", "end_learning_rate")} == dict(
        recipe=recipe, **{k: values_of(AdaptSegNet, recipe)[k] for k in ("bn", "sgd_groups", "batch_size",
                                                                          "end_learning_rate")})
    first = log_lines(straight)[0]
    assert first.startswith("recipe {} (".format(recipe)) and "overridden: --num-steps 20" in first


def test_the_default_run_says_its_recipe_and_a_changed_recipe_is_refused_on_resume(data, tmp_path, capsys):
    assert train.main(training_args(data, tmp_path, 1)) == 0
    assert "recipe paddle-port (the published Paddle reproduction" in capsys.readouterr().out
    with pytest.raises(CheckpointError, match=r"--recipe authors \(snapshot: paddle-port\).*--bn train \(snapshot: frozen\)"):
        train.main(training_args(data, tmp_path, 2, "--recipe", "authors", continue_train=True))


def test_a_snapshot_from_before_recipes_continues_with_the_settings_it_was_trained_with(data, tmp_path):
    """Round-2 runs trained batch 2, frozen BN, the authors' SGD and poly decay to 0, and their
    snapshots record no recipe, BN or end learning rate."""
    earlier = ["--recipe", "paddle-port", "--sgd-groups", "original", "--end-learning-rate", "0"]
    straight, old = tmp_path / "straight", tmp_path / "old"
    assert train.main(training_args(data, straight, 4, *earlier)) == 0
    assert train.main(training_args(data, old, 2, *earlier)) == 0
    state_path = str(old / "GTA5_2_state.pdopt")
    state = read_paddle_pickle(state_path)
    for key in ("recipe", "bn", "end_learning_rate"):
        del state["extra"]["args"][key]
    atomic_save(state, state_path)
    assert train.main(training_args(data, old, 4, continue_train=True)) == 0
    assert_same_snapshot(straight, old, 4)
    assert any(line.startswith("the snapshot predates recipes: the run continues with its own settings")
               and "--sgd-groups original" in line and "--bn frozen" in line for line in log_lines(old))


def test_a_continued_run_whose_schedule_ends_before_the_stop_is_refused_before_iteration_1(data, tmp_path):
    """--num-steps comes back from the snapshot; --num-steps-stop, not part of a recipe, does not."""
    assert train.main(training_args(data, tmp_path, 2, steps=20)) == 0
    arguments = training_args(data, tmp_path, 30, continue_train=True)
    del arguments[arguments.index("--num-steps"):arguments.index("--num-steps") + 2]
    arguments[arguments.index("--num-steps-stop") + 1] = "30"
    with pytest.raises(CheckpointError, match="ends at --num-steps 20, before --num-steps-stop 30"):
        train.main(arguments)


def test_where_the_kernel_already_moves_by_the_unbiased_variance_nothing_is_added(monkeypatch):
    """cuDNN's batch norm (a GPU's) updates as PyTorch does; Paddle's CPU kernel needs the correction."""
    import model.deeplab_multi as deeplab
    x = np.random.default_rng(1).normal(size=(2, 3, 4, 5)).astype(np.float32)
    variances = {}
    for biased in (True, False):
        monkeypatch.setitem(deeplab._BIASED, paddle.get_device(), biased)
        bn = FrozenAffineBatchNorm2D(3, statistics="train")
        bn(paddle.to_tensor(x))
        variances[biased] = bn._variance.numpy()
    np.testing.assert_allclose(variances[True], 0.9 + 0.1 * x.var(axis=(0, 2, 3), ddof=1), rtol=1e-6)
    np.testing.assert_allclose(variances[False], 0.9 + 0.1 * x.var(axis=(0, 2, 3)), rtol=1e-6)


def test_the_logged_pictures_do_not_move_the_running_statistics(data, tmp_path):
    with_pictures, without = tmp_path / "pictures", tmp_path / "none"
    assert train.main(training_args(data, with_pictures, 2, "--recipe", "authors", picture_every=1)) == 0
    assert train.main(training_args(data, without, 2, "--recipe", "authors")) == 0
    assert_same_snapshot(with_pictures, without, 2)
