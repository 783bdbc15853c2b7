"""ADVENT (utils/methods/advent.py) on the engine: its four-branch network, two iterations of MinEnt
and of AdvEnt against PyTorch in float64 (tests/fixtures/advent.npz, made by
tests/fixtures/make_advent_fixtures.py), ADVENT's and AdaptSegNet's weight files, and runs on
synthetic data that resume bit for bit.

The bound of the parity tests: Paddle float32 against the float64 reference may be as far as PyTorch
float32 is from it (the fixture's yardstick, measured the same way), times DISTANCE_FACTOR: two float32
implementations add in different orders and round differently, by amounts of the same size.
"""
import json
import os

import numpy as np
import paddle
import pytest

from dataset.synthetic import make_synthia
from model import FCDiscriminator, build_model
from model.deeplab_multi import ResNetMulti, trained_with_two_branches
from tests.fixtures.seeded_weights import seeded_input, seeded_training_batches
from tests.helpers import (FIXTURES, assert_same_snapshot, logged_losses, named_batches, seeded_torch_state,
                           training_args)
from utils.demo.torch_writer import save_zip
from utils.files.checkpoint import CheckpointError
from utils.files.weights import load_weights
from utils.methods import advent, method_class
from utils.methods.adaptsegnet import estimate_memory as adaptsegnet_memory
from utils.methods.advent import Advent
from utils.training.optimizer import build_sgd
from utils.training.options import SHARED_PARAMS, parse_settings
from utils.training.params import named, recipe_values
from utils.training.session import run_training

pytestmark = pytest.mark.paddle_api  # run on Paddle 2.6 too (README: the paddle-2.6 leg)

FIXTURE = os.path.join(FIXTURES, "advent.npz")
SYNTHETIC_DATA = dict(num_source=4, num_target_train=4, num_target_val=1)
DISTANCE_FACTOR = 4
# The fixture's losses per iteration, in its order; MinEnt has no discriminator (0).
FIXTURE_LOSSES = {"MinEnt": ("seg_src_main", "seg_src_aux", "ent_trg_main", "ent_trg_aux", "d_main", "d_aux"),
                  "AdvEnt": ("seg_src_main", "seg_src_aux", "adv_trg_main", "adv_trg_aux", "d_main", "d_aux")}


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(FIXTURE))


def paddle_names(torch_state):
    return {key.replace("running_mean", "_mean").replace("running_var", "_variance"): value
            for key, value in torch_state.items()}


def small_network(name="DeeplabMulti4", num_classes=19, bn="frozen"):
    """ResNetMulti with one bottleneck per layer in place of ResNet-101 (the same names and heads)."""
    return ResNetMulti([1, 1, 1, 1], num_classes, use_all_aspp_branches=name == "DeeplabMulti4", bn=bn)


@pytest.fixture
def small_networks(monkeypatch):
    monkeypatch.setattr(advent, "build_model", lambda name, num_classes, bn: small_network(name, num_classes, bn))


def relative(ours, theirs):
    return float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))


# -- the network ---------------------------------------------------------------------------------

def test_the_four_branch_classifier_matches_the_reference_forward(reference):
    model = small_network(num_classes=int(reference["num_classes"]))
    model.set_state_dict(paddle_names(seeded_torch_state(model, int(reference["weight_seed"]))))
    model.eval()
    image = seeded_input(reference["forward_input_shape"], int(reference["forward_input_seed"]))
    out_aux, out_main = model(paddle.to_tensor(image))
    errors = [relative(out.numpy().astype(np.float64), reference["forward/" + name])
              for out, name in ((out_aux, "out_aux"), (out_main, "out_main"))]
    print("four-branch forward, relative error (aux, main): {:.1e} {:.1e}".format(*errors))
    assert max(errors) < 1e-5
    # AdaptSegNet's network from the same weights sums two branches: another output.
    two = small_network("DeeplabMulti", num_classes=int(reference["num_classes"]))
    two.set_state_dict(model.state_dict())
    two.eval()
    assert relative(two(paddle.to_tensor(image))[1].numpy(), reference["forward/out_main"]) > 0.1


def test_the_model_names_keep_their_meaning():
    assert build_model("DeeplabMulti4").layer6.use_all_branches
    assert not build_model("DeeplabMulti").layer6.use_all_branches
    assert not build_model("DeepLab").layer5.use_all_branches


# -- two iterations against PyTorch ----------------------------------------------------------------

def advent_arguments(variant, reference, tmp_path):
    """The advent recipe on the fixture's task, with its learning rate and target-loss weights."""
    width, height = reference["source_size"]
    target_width, target_height = reference["target_size"]
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"classes": ["class{}".format(c) for c in range(int(reference["num_classes"]))]}))
    main, aux = str(float(reference["lambda_main"])), str(float(reference["lambda_aux"]))
    return parse_settings(Advent, [
        "--recipe", "advent", "--da-method", variant, "--from-scratch", "--source", "custom", "--target", "custom",
        "--classes", str(classes), "--data-dir", str(tmp_path), "--data-dir-target", str(tmp_path),
        "--input-size", "{},{}".format(width, height),
        "--input-size-target", "{},{}".format(target_width, target_height),
        "--learning-rate", str(float(reference["learning_rate"])),
        "--learning-rate-D", str(float(reference["learning_rate_D"])),
        "--lambda-ent-main", main, "--lambda-ent-aux", aux, "--lambda-adv-main", main, "--lambda-adv-aux", aux])


def two_iterations(variant, reference, tmp_path):
    args = advent_arguments(variant, reference, tmp_path)
    num_classes = int(reference["num_classes"])
    model = small_network(args.model, num_classes, args.bn)
    model.set_state_dict(paddle_names(seeded_torch_state(model, int(reference["weight_seed"]))))
    model.train()
    method = Advent.on_networks(args, {"model": model}, [build_sgd(model, args)])
    nets = {"model": model}
    if variant == "AdvEnt":
        discriminators = {name: FCDiscriminator(num_classes) for name in ("D1", "D2")}
        for net, seed in zip(discriminators.values(), reference["discriminator_seeds"]):
            net.set_state_dict(seeded_torch_state(net, int(seed)))
        method.add_discriminators(discriminators)
        nets.update(discriminators)
    before = {name: {k: v.numpy().copy() for k, v in net.state_dict().items()} for name, net in nets.items()}
    data = seeded_training_batches(args.batch_size, 2, reference["source_size"], reference["target_size"],
                                   num_classes, int(reference["data_seed"]), reference["input_scale"])
    losses = []
    for iteration, (source, labels, target) in enumerate(data):
        batch = [((paddle.to_tensor(source), paddle.to_tensor(labels)), (paddle.to_tensor(target),))]
        logged, _ = method.run_step(named_batches(batch), iteration)
        losses.append([logged.get(name, 0.0) for name in FIXTURE_LOSSES[variant]])
    return args, nets, before, losses


@pytest.mark.parametrize("variant", ["MinEnt", "AdvEnt"])
def test_two_iterations_match_the_reference_within_float32s_own_distance(variant, reference, tmp_path):
    args, nets, before, losses = two_iterations(variant, reference, tmp_path)
    assert (args.batch_size, args.bn, args.sgd_groups, args.model) == (1, "train", "original", "DeeplabMulti4")
    np.testing.assert_allclose(losses, reference[variant + "/losses"], rtol=1e-4, atol=1e-6)
    worst = {"G": 0.0, "D": 0.0, "BN": 0.0}
    for net_name, net in nets.items():
        group = "G" if net_name == "model" else "D"
        after = {k: v.numpy() for k, v in net.state_dict().items()}
        trained = [name for name, p in net.named_parameters() if not p.stop_gradient]
        for name in trained:
            key = "{}/{}/{}".format(variant, net_name, name)
            change = (after[name] - before[net_name][name]).ravel().astype(np.float64)
            expected = reference[key.replace("/", "/change/", 1)]
            assert reference[key.replace("/", "/change_norm/", 1)] > 0, key  # all four branches train
            worst[group] = max(worst[group], relative(change[reference[key.replace("/", "/index/", 1)]], expected),
                               abs(np.linalg.norm(change) / reference[key.replace("/", "/change_norm/", 1)] - 1))
        if net_name == "model":
            for name in (n for n in after if n.endswith(("_mean", "_variance"))):
                torch_name = name.replace("_mean", "running_mean").replace("_variance", "running_var")
                expected = reference["{}/bn/{}".format(variant, torch_name)] - before["model"][name]
                worst["BN"] = max(worst["BN"], relative(after[name] - before["model"][name], expected))
    groups = ("G", "D", "BN") if variant == "AdvEnt" else ("G", "BN")
    for group in groups:
        yardstick = float(reference["{}/float32_distance/{}".format(variant, group)])
        bound = DISTANCE_FACTOR * yardstick
        print("{} {}: Paddle float32 {:.2e} from float64 (PyTorch float32 {:.2e}; allowed {:.2e})".format(
            variant, group, worst[group], yardstick, bound))
        assert worst[group] <= bound, group


# -- weight files --------------------------------------------------------------------------------

def torch_file_state(model, seed):
    """What ADVENT's torch.save(model.state_dict()) holds: PyTorch names, BN step counters included."""
    state = seeded_torch_state(model, seed)
    for name in [k for k in state if k.endswith("running_mean")]:
        state[name.replace("running_mean", "num_batches_tracked")] = np.array(120000, dtype=np.int64)
    return state


def test_an_advent_pth_converts_and_loads_key_by_key_into_the_four_branch_model(tmp_path):
    model = build_model("DeeplabMulti4", num_classes=19)
    state = torch_file_state(model, 0)
    path = str(tmp_path / "gta2cityscapes_advent.pth")
    save_zip(state, path)
    report = load_weights(model, path)
    assert report.kind == "pytorch" and not report.fresh
    assert set(report.params) == set(model.state_dict())
    for name, value in model.state_dict().items():
        torch_name = name.replace("_mean", "running_mean").replace("_variance", "running_var")
        np.testing.assert_array_equal(value.numpy(), state[torch_name], err_msg=name)
    assert not trained_with_two_branches(report.params)


def test_an_adaptsegnet_model_is_told_from_an_advent_one_by_its_untrained_branches():
    """The files share every key; AdaptSegNet's forward never used branches 2 and 3, so its training
    left them at their N(0, 0.01) initialisation, which ADVENT's training moves off."""
    params = paddle_names(seeded_torch_state(build_model("DeeplabMulti4", num_classes=19), 0))
    classifiers = {k: v for k, v in params.items() if ".conv2d_list." in k}
    assert not trained_with_two_branches(classifiers)  # every branch trained (seeded weights stand in)
    rng = np.random.default_rng(0)
    for name in [k for k in classifiers if k.endswith("weight") and (".conv2d_list.2." in k or ".conv2d_list.3." in k)]:
        classifiers[name] = rng.normal(0, 0.01, classifiers[name].shape).astype(np.float32)
    assert trained_with_two_branches(classifiers)
    fresh = {k: v.numpy() for k, v in build_model("DeeplabMulti4", num_classes=19).state_dict().items()}
    assert not trained_with_two_branches(fresh)  # a fresh model: nothing to tell


def adaptsegnet_weights(path, num_classes=19):
    """A trained-looking AdaptSegNet model (seeded weights) whose branches 2 and 3 are as initialised."""
    model = small_network("DeeplabMulti", num_classes)
    state = paddle_names(seeded_torch_state(model, 0))
    fresh = small_network("DeeplabMulti", num_classes).state_dict()
    state.update({k: v.numpy() for k, v in fresh.items() if ".conv2d_list.2." in k or ".conv2d_list.3." in k})
    paddle.save(state, str(path))
    return str(path)


def test_an_adaptsegnet_model_given_to_the_four_branch_network_is_named_in_one_warning(data, tmp_path, small_networks):
    weights = adaptsegnet_weights(tmp_path / "adaptsegnet.pdparams")
    warnings = {}
    for model in ("DeeplabMulti4", "DeeplabMulti"):
        run = tmp_path / model
        settings = parse_settings(Advent, training_args(data, run, 1, "--restore-from", weights, "--model", model))
        assert run_training(settings, Advent) == 0
        with open(str(run / "train.log")) as f:
            warnings[model] = [line for line in f if "warning: --restore-from" in line]
    assert len(warnings["DeeplabMulti4"]) == 1 and not warnings["DeeplabMulti"]
    assert "branches 2 and 3 of its classifiers are untrained" in warnings["DeeplabMulti4"][0]
    assert "Give --model DeeplabMulti" in warnings["DeeplabMulti4"][0]


# -- the method on the engine --------------------------------------------------------------------

def test_the_advent_recipe_is_the_reference_configuration():
    values = recipe_values(SHARED_PARAMS + list(Advent.params), named(Advent.recipes, "advent"))
    assert (values["lambda_seg_main"], values["lambda_seg_aux"], values["lambda_ent_main"], values["lambda_ent_aux"],
            values["lambda_adv_main"], values["lambda_adv_aux"]) == (1.0, 0.1, 1e-3, 2e-4, 1e-3, 2e-4)
    assert (values["batch_size"], values["bn"], values["sgd_groups"], values["learning_rate"],
            values["learning_rate_D"], values["power"], values["num_steps"], values["end_learning_rate"]) == (
        1, "train", "original", 2.5e-4, 1e-4, 0.9, 250000, 0.0)
    defaults = parse_settings(Advent, ["--from-scratch"])
    assert (defaults.recipe, defaults.da_method) == ("advent", "AdvEnt")
    assert {name: getattr(defaults, name) for name in values} == values
    assert (defaults.model, defaults.num_steps_stop, defaults.save_pred_every, defaults.random_seed,
            defaults.input_size, defaults.input_size_target) == ("DeeplabMulti4", 120000, 2000, 1234, (1280, 720),
                                                                  (1024, 512))
    port = parse_settings(Advent, ["--from-scratch", "--recipe", "paddle-port"])
    assert (port.batch_size, port.bn, port.sgd_groups, port.lambda_adv_main) == (2, "frozen", "single", 1e-3)
    assert method_class("advent") is Advent


def test_minent_trains_no_discriminator_and_says_which_flag_is_at_fault(data, tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_settings(Advent, training_args(data, tmp_path, 1, "--da-method", "MinEnt",
                                             "--restore-from-D1", "d.pdparams"))
    assert "--da-method MinEnt trains no discriminator: drop --restore-from-D1/-D2" in capsys.readouterr().err


@pytest.mark.parametrize("variant,parts,losses", [
    ("MinEnt", (), {"seg_src_main", "seg_src_aux", "ent_trg_main", "ent_trg_aux"}),
    ("AdvEnt", ("D1", "D2"), {"seg_src_main", "seg_src_aux", "adv_trg_main", "adv_trg_aux", "d_main", "d_aux"}),
])
def test_a_run_resumes_bit_for_bit(variant, parts, losses, data, tmp_path, small_networks):
    def train(directory, stop, continue_train=False):
        settings = parse_settings(Advent, training_args(data, directory, stop, "--da-method", variant, mirror=True,
                                                        continue_train=continue_train))
        return run_training(settings, Advent)

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train(straight, 4) == 0
    assert train(resumed, 2) == 0
    assert train(resumed, 4, continue_train=True) == 0
    assert_same_snapshot(straight, resumed, 4, discriminators=parts)
    assert logged_losses(resumed) == logged_losses(straight)
    assert {k[len("loss/"):] for k in logged_losses(straight)[0][1] if k.startswith("loss/")} == losses
    assert sorted(os.listdir(str(straight))).count("GTA5_4_D2.pdparams") == len(parts) // 2


def test_a_run_continues_with_the_network_it_started_with(data, tmp_path, small_networks):
    """DeeplabMulti4 and DeeplabMulti share every key: only the snapshot's record tells them apart."""
    def train(stop, *flags):
        settings = parse_settings(Advent, training_args(data, tmp_path, stop, "--da-method", "MinEnt", *flags,
                                                        save_every=1, continue_train=True))
        return run_training(settings, Advent)

    assert train(1) == 0
    with pytest.raises(CheckpointError, match=r"--model DeeplabMulti \(snapshot: DeeplabMulti4\)"):
        train(2, "--model", "DeeplabMulti")
    assert train(2) == 0


def test_synthia_to_cityscapes_validates_each_snapshot_on_its_16_classes(data, tmp_path, small_networks):
    """ADVENT's second benchmark: --source synthia (16-bit labels, 16 classes scored) and --val."""
    synthia = make_synthia(str(tmp_path / "data"), count=4)
    run = tmp_path / "run"
    settings = parse_settings(Advent, training_args((synthia, data[1]), run, 2, "--source", "synthia", "--val",
                                                    "--val-backend", "dygraph", "--da-method", "AdvEnt"))
    assert run_training(settings, Advent) == 0
    assert sorted(name for name in os.listdir(str(run)) if name.startswith("SYNTHIA_2")) == [
        "SYNTHIA_2.eval.json", "SYNTHIA_2.pdparams", "SYNTHIA_2_D1.pdparams", "SYNTHIA_2_D2.pdparams",
        "SYNTHIA_2_state.pdopt"]
    assert os.path.isfile(str(run / "SYNTHIA_best.pdparams"))
    with open(str(run / "metrics.jsonl")) as f:
        validated = [json.loads(line)["scalars"] for line in f if "val/mIoU" in line]
    assert len(validated) == 1 and 0.0 <= validated[0]["val/mIoU"] <= 1.0
    with open(str(run / "SYNTHIA_2.eval.json")) as f:
        score = json.load(f)
    assert score["classes"] == "16" and score["mIoU"] == pytest.approx(validated[0]["val/mIoU"])


def test_with_amp_the_loss_scale_is_kept_and_the_run_resumes_exactly(data, tmp_path, small_networks, monkeypatch):
    """--amp fp16's plumbing (a CPU refuses it: the check is lifted here, autocast then does nothing)."""
    import utils.training.session
    monkeypatch.setattr(utils.training.session, "check_amp_supported", lambda mode, use_gpu: None)

    def train(directory, stop, continue_train=False):
        settings = parse_settings(Advent, training_args(data, directory, stop, "--amp", "fp16",
                                                        continue_train=continue_train))
        return run_training(settings, Advent)

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train(straight, 4) == 0 and train(resumed, 2) == 0 and train(resumed, 4, continue_train=True) == 0
    assert_same_snapshot(straight, resumed, 4)
    state = paddle.load(str(straight / "GTA5_4_state.pdopt"), return_numpy=True)["state"]
    assert state["amp"]["mode"] == "fp16" and state["amp"]["good_steps"] == 4


def test_the_memory_estimate_adds_the_entropy_maps_to_adaptsegnets():
    model = small_network(bn="train")
    ours = advent.estimate_memory(1, (320, 180), (256, 128), "train", model=model)
    theirs = adaptsegnet_memory(1, (320, 180), (256, 128), "train", model=model)
    maps = 2 * advent.ENTROPY_COPIES * 19 * 320 * 180 * 4  # two heads, float32, at the larger (source) size
    assert ours.parts == theirs.parts and ours.total_bytes >= theirs.total_bytes
    assert ours.passes["source pass"] == theirs.passes["source pass"]
    assert ours.passes["target pass"] - theirs.passes["target pass"] == maps
    assert ours.passes["discriminator pass"] - theirs.passes["discriminator pass"] == maps


# -- ADVENT's config files -------------------------------------------------------------------------

# Three of the configs ADVENT ships (advent/scripts/configs/), as their users have them.
MINENT_YML = """SOURCE: GTA
TARGET: Cityscapes
NUM_WORKERS: 4
TRAIN:
  DA_METHOD: MinEnt
  MODEL: DeepLabv2
  RESTORE_FROM: ../../pretrained_models/DeepLab_resnet_pretrained_imagenet.pth
  MULTI_LEVEL: True
  LAMBDA_ENT_MAIN: 0.001
  LAMBDA_ENT_AUX: 0.0002
TEST:
  MODE: best
"""
ENSEMBLE_YML = """SOURCE: GTA
TARGET: Cityscapes
EXP_NAME: GTA2Cityscapes_AdvEnt_MinEnt
NUM_WORKERS: 4
TEST:
  MODE: single
  MODEL:
    - DeepLabv2
    - DeepLabv2
  MULTI_LEVEL:
    - True
    - True
  RESTORE_FROM:
    - ../../pretrained_models/gta2cityscapes_advent.pth
    - ../../pretrained_models/gta2cityscapes_minent_ER.pth
  MODEL_WEIGHT:
    - 0.5
    - 0.5
"""


def config_file(tmp_path, text, name="advent.yml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_an_advent_config_sets_what_the_same_flags_set(tmp_path):
    minent = config_file(tmp_path, MINENT_YML, "minent.yml")
    from_config = parse_settings(Advent, ["--cfg", minent]).record()
    from_flags = parse_settings(Advent, [
        "--da-method", "MinEnt", "--restore-from", "../../pretrained_models/DeepLab_resnet_pretrained_imagenet.pth",
        "--lambda-ent-main", "0.001", "--lambda-ent-aux", "0.0002", "--num-workers", "4",
        "--snapshot-dir", os.path.join("experiments", "snapshots", "GTA2Cityscapes_DeepLabv2_MinEnt")]).record()
    assert from_config.pop("cfg") == minent
    assert from_config.pop("explicit") == ["lambda_ent_main", "lambda_ent_aux"]
    from_flags.pop("explicit")
    assert from_flags.pop("cfg") is None
    assert from_config == from_flags
    # a flag given with the file overrides the file
    overridden = parse_settings(Advent, ["--cfg", minent, "--da-method", "AdvEnt", "--snapshot-dir", "runs/a"])
    assert (overridden.da_method, overridden.snapshot_dir, overridden.lambda_ent_main) == ("AdvEnt", "runs/a", 0.001)
    every_key = config_file(tmp_path, "SOURCE: SYNTHIA\nDATA_DIRECTORY_SOURCE: /d/SYNTHIA\n"
                            "DATA_LIST_TARGET: lists/{}.txt\nTRAIN:\n  SET_TARGET: train\n"
                            "  BATCH_SIZE_SOURCE: 2\n  BATCH_SIZE_TARGET: 2\n"
                            "  INPUT_SIZE_SOURCE: [640, 380]\n  LEARNING_RATE_D: 0.0002\n  EARLY_STOP: 6000\n"
                            "  SAVE_PRED_EVERY: 500\n  SNAPSHOT_DIR: runs/s\n  RANDOM_SEED: 7\n  MAX_ITERS: 9000\n"
                            "  IMG_MEAN: [104.00698793, 116.66876762, 122.67891434]\n", "synthia.yml")
    settings = parse_settings(Advent, ["--cfg", every_key, "--from-scratch"])
    assert (settings.source, settings.data_dir, settings.data_list_target, settings.batch_size, settings.input_size,
            settings.learning_rate_D, settings.num_steps_stop, settings.save_pred_every, settings.snapshot_dir,
            settings.random_seed, settings.num_steps) == (
        "synthia", "/d/SYNTHIA", "lists/train.txt", 2, (640, 380), 2e-4, 6000, 500, "runs/s", 7, 9000)


def test_the_advent_ensemble_config_evaluates_the_weighted_ensemble(tmp_path):
    import evaluate_cityscapes
    args = evaluate_cityscapes.get_arguments(["--cfg", config_file(tmp_path, ENSEMBLE_YML)])
    assert (args.restore_from, args.ensemble, args.model_weights, args.model, args.num_workers) == (
        "../../pretrained_models/gta2cityscapes_advent.pth", ["../../pretrained_models/gta2cityscapes_minent_ER.pth"],
        [0.5, 0.5], "DeeplabMulti4", 4)
    best = evaluate_cityscapes.get_arguments(["--cfg", config_file(tmp_path, MINENT_YML, "minent.yml")])
    assert (best.restore_from, best.ensemble) == (
        os.path.join("experiments", "snapshots", "GTA2Cityscapes_DeepLabv2_MinEnt"), [])


@pytest.mark.parametrize("text,message", [
    ("TRAIN:\n  DA_METHD: MinEnt\n", "TRAIN.DA_METHD is not a key of ADVENT's config"),
    ("TRAIN:\n  DA_METHOD: Entropy\n", "TRAIN.DA_METHOD: 'Entropy': expected one of AdvEnt, MinEnt, AdvEnt+MinEnt"),
    ("TRAIN:\n  MODEL: DeepLabv3\n", "TRAIN.MODEL: 'DeepLabv3': only 'DeepLabv2' is supported here"),
    ("TRAIN:\n  LEARNING_RATE: fast\n", "TRAIN.LEARNING_RATE: 'fast': could not convert"),
    ("TRAIN:\n  BATCH_SIZE_SOURCE: 2\n", "TRAIN.BATCH_SIZE_SOURCE and TRAIN.BATCH_SIZE_TARGET differ"),
    ("TRAIN: [1, 2\n", "not valid YAML"),
    ("- MinEnt\n", "expected ADVENT's config, a mapping"),
])
def test_a_config_key_or_value_not_understood_is_one_line_naming_file_and_key(text, message, tmp_path, capsys):
    path = config_file(tmp_path, text)
    with pytest.raises(SystemExit):
        parse_settings(Advent, ["--cfg", path, "--from-scratch"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.split(" error: ", 1)[1].startswith("--cfg {}: ".format(path)) and message in error
