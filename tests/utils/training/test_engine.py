"""The engine on its own, driven by a method that is one small class in this file: its flags, recipe
line and resume checks come from its declarations, and the engine trains it, snapshots it, resumes
it bit for bit and saves its settings whole. README's "Code layout" shows the same shape."""
import os

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest

from dataset.sources import make_source, make_target
from model.common import parameters_per_enclosing_layer
from tests.helpers import assert_same_snapshot, logged_losses, training_args
from utils.files.checkpoint import CheckpointError
from utils.files.weights import read_paddle_pickle
from utils.loss import seg_loss
from utils.training.method import Method, MethodError, upsample
from utils.training.optimizer import build_sgd
from utils.training.options import parse_settings
from utils.training.params import Param, Recipe
from utils.training.session import command_line, run_training

SYNTHETIC_DATA = dict(num_source=4, num_target_train=4, num_target_val=1)


class TwoHeads(nn.Layer):
    """The shape of DeepLab's output (two heads at a lower resolution) in two convolutions."""

    def __init__(self, num_classes):
        super().__init__()
        self.layer4 = nn.Sequential(nn.Conv2D(3, 8, 3, stride=4, padding=1))
        self.layer5 = nn.Conv2D(8, num_classes, 1)
        self.layer6 = nn.Conv2D(8, num_classes, 1)

    def forward(self, x):
        features = F.relu(self.layer4(x))
        return self.layer5(features), self.layer6(features)

    def optim_parameters(self):
        return [(parameters_per_enclosing_layer([self.layer4]), 1.0),
                (list(self.layer5.parameters()) + list(self.layer6.parameters()), 10.0)]


class Sharpen(Method):
    """A made-up method: the source's segmentation loss, plus the target's entropy weighted by
    --lambda-sharpen on the head that --sharpen-head names."""

    description = "a method made up for the engine's test"
    recipes = [Recipe("toy", "this test", "none", schedule="authors")]
    default_recipe = "toy"
    params = [Param("lambda_sharpen", {"toy": 0.5}, "weight of the target's entropy", type=float),
              Param("sharpen_head", "conv5", "the head whose entropy is lowered", choices=["conv4", "conv5"])]
    loss_names = ("seg", "entropy")

    def __init__(self, settings):
        super().__init__(settings)
        if settings.target == "nthu":
            raise MethodError("--target nthu: this method needs Cityscapes")
        self.source, self.target = make_source(settings), make_target(settings)
        paddle.seed(settings.random_seed)
        self.nets["model"] = model = TwoHeads(settings.num_classes)
        self.state["model"] = sgd = build_sgd(model, settings)
        self.optimizers.append(sgd)

    def step(self, source, target, scale, seed):
        args, model = self.args, self.nets["model"]
        loss_seg = seg_loss(upsample(model(source.images)[1], args.input_size), source.labels, args.ignore_label)
        heads = model(target.images)
        p = F.softmax(heads[1] if args.sharpen_head == "conv5" else heads[0], axis=1)
        entropy = -(p * paddle.log(p + 1e-30)).sum(axis=1).mean()
        ((loss_seg + args.lambda_sharpen * entropy) * scale).backward()
        return {"seg": loss_seg, "entropy": entropy}


def sharpen(argv):
    return run_training(parse_settings(Sharpen, argv), Sharpen)


def test_the_flags_and_the_recipe_line_come_from_the_declarations(data, tmp_path, capsys):
    settings = parse_settings(Sharpen, training_args(data, tmp_path, 2))
    # The toy recipe takes the shared values of the authors' schedule and adds its own.
    assert (settings.recipe, settings.lambda_sharpen, settings.batch_size, settings.bn) == ("toy", 0.5, 1, "train")
    assert settings.sharpen_head == "conv5"
    with pytest.raises(SystemExit):
        parse_settings(Sharpen, ["--help"])
    assert "weight of the target's entropy (recipe toy: 0.5)" in " ".join(capsys.readouterr().out.split())
    assert sharpen(training_args(data, tmp_path, 2, "--lambda-sharpen", "0.25")) == 0
    with open(os.path.join(str(tmp_path), "train.log")) as f:
        first = f.readline()
    assert first.startswith("recipe toy (this test; published: none): --batch-size 1, --bn train")
    assert "--lambda-sharpen 0.25" in first and "overridden: --num-steps 20, --lambda-sharpen 0.25" in first
    steps = logged_losses(tmp_path)
    assert [step for step, _ in steps] == [1, 2]
    assert all(set(values) >= {"loss/seg", "loss/entropy", "lr/G"} for _, values in steps)


def test_the_engine_resumes_the_method_bit_for_bit_and_keeps_its_hyper_parameters(data, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert sharpen(training_args(data, straight, 4, mirror=True)) == 0
    assert sharpen(training_args(data, resumed, 2, mirror=True)) == 0
    assert sharpen(training_args(data, resumed, 4, mirror=True, continue_train=True)) == 0
    assert_same_snapshot(straight, resumed, 4, discriminators=())
    assert logged_losses(resumed) == logged_losses(straight)
    with pytest.raises(CheckpointError, match=r"--sharpen-head conv4 \(snapshot: conv5\)"):
        sharpen(training_args(data, resumed, 6, "--sharpen-head", "conv4", mirror=True, continue_train=True))


def test_the_settings_are_frozen_once_resolved_and_saved_whole_with_each_snapshot(data, tmp_path):
    settings = parse_settings(Sharpen, training_args(data, tmp_path, 2, "--lambda-sharpen", "0.125"))
    assert run_training(settings, Sharpen) == 0
    with pytest.raises(AttributeError, match="frozen once resolved; --lambda-sharpen cannot change"):
        settings.lambda_sharpen = 1.0
    saved = read_paddle_pickle(str(tmp_path / "GTA5_2_state.pdopt"))["extra"]
    assert saved["settings"]["lambda_sharpen"] == 0.125 and saved["settings"]["num_steps_stop"] == 2
    assert saved["settings"]["snapshot_dir"] == str(tmp_path)
    assert saved["args"]["lambda_sharpen"] == 0.125 and "snapshot_dir" not in saved["args"]  # what resuming checks


def test_an_error_of_the_method_is_one_line_and_a_bug_keeps_its_traceback(data, tmp_path, monkeypatch):
    nthu = training_args(data, tmp_path / "nthu", 2, "--target", "nthu", "--city", "Rome")
    assert command_line(lambda: sharpen(nthu)) == "error: --target nthu: this method needs Cityscapes"

    def broken(self, source, target, scale, seed):
        return {"seg": np.float32(0)}["entropy"]  # a bug: a KeyError in the method's own code

    monkeypatch.setattr(Sharpen, "step", broken)
    with pytest.raises(KeyError):
        command_line(lambda: sharpen(training_args(data, tmp_path / "bug", 2)))
    with open(str(tmp_path / "bug" / "train.log")) as f:
        log = f.read()
    assert "Traceback (most recent call last)" in log and "KeyError: 'entropy'" in log


def test_every_registered_method_declares_what_the_engine_needs():
    from utils.methods import METHODS, method_class
    for name in METHODS:
        method = method_class(name)
        assert issubclass(method, Method) and method.loss_names, name
        assert method.default_recipe in [recipe.name for recipe in method.recipes], name
        parse_settings(method, ["--from-scratch"])  # every declared value parses as its flag says
