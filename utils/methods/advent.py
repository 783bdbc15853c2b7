"""ADVENT (Vu, Jain, Bucher, Cord, Perez, CVPR 2019): entropy minimisation on the target, directly
(MinEnt) or adversarially (AdvEnt), on AdaptSegNet's multi-level network with ADVENT's four-branch
classifiers (``--model DeeplabMulti4``, the default here).

    python -m utils.methods advent --restore-from DeepLab_resnet_pretrained_imagenet.pth \\
        --snapshot-dir snapshots/advent --continue-train                        # AdvEnt: 43.8 mIoU in the paper
    python -m utils.methods advent ... --da-method MinEnt                      # MinEnt: 42.3

Each iteration, on every sub-batch (``step``), in the order of the reference (valeoai/ADVENT,
domain_adaptation/train_UDA.py):

1. the source's segmentation loss: the conv5 head's ("main") times --lambda-seg-main plus the conv4
   head's ("aux") times --lambda-seg-aux;
2. on the target, the discriminators frozen: MinEnt, each head's entropy; AdvEnt, each head's
   self-information map made to look like the source's to its discriminator (source label 0);
3. AdvEnt: each discriminator trained to tell the source's maps (0) from the target's (1), each
   half weighted 1/2;

then (the engine) G's SGD and the discriminators' Adam step. The paper's "AdvEnt + MinEnt" (45.5)
is the test-time ensemble of an AdvEnt and a MinEnt model, not ``--da-method AdvEnt+MinEnt`` (both
losses in one run, which nobody has published).

ADVENT's own YAML configs (``--cfg advent.yml``, the keys of its domain_adaptation/config.py) are
read by ``read_advent_config``; flags given on the command line override them.
"""
import os

import numpy as np
import paddle
import paddle.nn.functional as F

from dataset.sources import make_source, make_target
from model import FCDiscriminator, build_model
from model.deeplab_multi import trained_with_two_branches
from utils.loss import SOURCE_LABEL, TARGET_LABEL, adv_loss, entropy_loss, seg_loss, self_information
from utils.methods.adaptsegnet import estimate_memory as adaptsegnet_memory
from utils.training.memory import FLOAT_BYTES, MemoryEstimate, check_gpu_memory
from utils.training.method import Method, set_trainable, upsample
from utils.training.optimizer import build_sgd, describe
from utils.training.params import Param, Recipe, same_in

FOUR_BRANCHES = "DeeplabMulti4"
DA_METHODS = ("AdvEnt", "MinEnt", "AdvEnt+MinEnt")

RECIPES = [
    # batch 1, BN in training mode, the duplicated SGD entries, poly to 0: the authors' schedule.
    Recipe("advent", "the ADVENT authors' code (valeoai/ADVENT)",
           "AdvEnt 43.8, MinEnt 42.3 mIoU (paper, GTA5 -> Cityscapes)", schedule="authors"),
    # The one schedule shown to reach AdaptSegNet's accuracy in Paddle (batch 2, frozen BN, one
    # Momentum): it avoids the batch-1 BN statistics and uses a card better.
    Recipe("paddle-port", "ADVENT's losses on the Paddle port's batch, BN and optimizer",
           "none: nobody has published this run"),
]

PARAMS = [
    Param("da_method", "AdvEnt", "AdvEnt: the target's self-information maps made to fool a discriminator per head; "
          "MinEnt: the target's entropy minimised directly (no discriminator); AdvEnt+MinEnt: both losses in one run "
          "(the paper's 'AdvEnt + MinEnt' is the ensemble of two models instead)", choices=DA_METHODS),
    Param("lambda_seg_main", same_in(RECIPES, 1.0), "weight of the conv5 head's segmentation loss on the source "
          "(ADVENT's LAMBDA_SEG_MAIN)", type=float),
    Param("lambda_seg_aux", same_in(RECIPES, 0.1), "weight of the conv4 head's segmentation loss on the source "
          "(LAMBDA_SEG_AUX)", type=float),
    Param("lambda_ent_main", same_in(RECIPES, 1e-3), "MinEnt: weight of the conv5 head's entropy on the target "
          "(LAMBDA_ENT_MAIN)", type=float),
    Param("lambda_ent_aux", same_in(RECIPES, 2e-4), "MinEnt: weight of the conv4 head's entropy on the target "
          "(LAMBDA_ENT_AUX)", type=float),
    Param("lambda_adv_main", same_in(RECIPES, 1e-3), "AdvEnt: weight of the conv5 head's adversarial loss "
          "(LAMBDA_ADV_MAIN)", type=float),
    Param("lambda_adv_aux", same_in(RECIPES, 2e-4), "AdvEnt: weight of the conv4 head's adversarial loss "
          "(LAMBDA_ADV_AUX)", type=float),
]

# Per head and target image, in units of num_classes x H x W, beyond AdaptSegNet's LOGIT_COPIES:
# log2(p + 1e-30) and the map (or the entropy's product) that the backward pass keeps.
ENTROPY_COPIES = 2


def adversarial(settings):
    return settings.da_method in ("AdvEnt", "AdvEnt+MinEnt")


def minimises_entropy(settings):
    return settings.da_method in ("MinEnt", "AdvEnt+MinEnt")


def estimate_memory(batch_size, source_size, target_size, bn="frozen", num_classes=19, model=None, on_gpu=False):
    """Peak memory of one ADVENT iteration: AdaptSegNet's (the same passes; a MinEnt run counts the
    discriminators it does not have, an upper bound) plus the entropy maps of the target pass and of
    the discriminators' pass. Returns a utils/training/memory.py MemoryEstimate."""
    model = model if model is not None else build_model(FOUR_BRANCHES, num_classes=num_classes, bn=bn)
    base = adaptsegnet_memory(batch_size, source_size, target_size, bn, num_classes, model=model, on_gpu=on_gpu)
    maps = 2 * ENTROPY_COPIES * batch_size * num_classes * max(w * h for w, h in (source_size, target_size)) \
        * FLOAT_BYTES
    passes = {name: size + (maps if name != "source pass" else 0) for name, size in base.passes.items()}
    return MemoryEstimate(batch_size, base.parts, passes)


# ----------------------------------------------------------------------------- ADVENT's config files

# The keys of ADVENT's config (domain_adaptation/config.py), SECTION.KEY. A file names some of them;
# the others keep ADVENT's defaults, which recipe ``advent`` and evaluation's defaults already are.
ADVENT_COMMON = {"SOURCE", "TARGET", "NUM_WORKERS", "DATA_LIST_SOURCE", "DATA_LIST_TARGET", "DATA_DIRECTORY_SOURCE",
                 "DATA_DIRECTORY_TARGET", "NUM_CLASSES", "EXP_NAME", "EXP_ROOT", "EXP_ROOT_SNAPSHOT", "EXP_ROOT_LOGS",
                 "GPU_ID"}
ADVENT_TRAIN = {"SET_SOURCE", "SET_TARGET", "BATCH_SIZE_SOURCE", "BATCH_SIZE_TARGET", "IGNORE_LABEL",
                "INPUT_SIZE_SOURCE", "INPUT_SIZE_TARGET", "INFO_SOURCE", "INFO_TARGET", "MODEL", "MULTI_LEVEL",
                "RESTORE_FROM", "IMG_MEAN", "LEARNING_RATE", "MOMENTUM", "WEIGHT_DECAY", "POWER", "LAMBDA_SEG_MAIN",
                "LAMBDA_SEG_AUX", "DA_METHOD", "LEARNING_RATE_D", "LAMBDA_ADV_MAIN", "LAMBDA_ADV_AUX",
                "LAMBDA_ENT_MAIN", "LAMBDA_ENT_AUX", "MAX_ITERS", "EARLY_STOP", "SAVE_PRED_EVERY", "SNAPSHOT_DIR",
                "RANDOM_SEED", "TENSORBOARD_LOGDIR", "TENSORBOARD_VIZRATE"}
ADVENT_TEST = {"MODE", "MODEL", "MODEL_WEIGHT", "MULTI_LEVEL", "IMG_MEAN", "RESTORE_FROM", "SNAPSHOT_DIR",
               "SNAPSHOT_STEP", "SNAPSHOT_MAXITER", "SET_TARGET", "BATCH_SIZE_TARGET", "INPUT_SIZE_TARGET",
               "OUTPUT_SIZE_TARGET", "INFO_TARGET", "WAIT_MODEL"}
ADVENT_DOMAINS = {"GTA": "gta5", "SYNTHIA": "synthia", "Cityscapes": "cityscapes"}
ADVENT_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)


class AdventConfig(object):
    """ADVENT's YAML config file, its keys checked as ADVENT checks them (a key it does not know is
    refused); read_advent_config and read_advent_test_config make the settings of training and of
    evaluation of it. Keys of what works otherwise here are accepted and not used: the class files
    (INFO_*: the class set knows its labels), the log folders (logs go beside the snapshots),
    SNAPSHOT_STEP/SNAPSHOT_MAXITER (every snapshot of the run is scored) and WAIT_MODEL. A
    ValueError names the file and the key."""

    def __init__(self, path):
        import yaml
        try:
            with open(path, "rb") as handle:
                content = yaml.safe_load(handle.read().decode("utf-8"))
        except OSError as error:
            raise ValueError("--cfg {}: {}".format(path, error.strerror or error))
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise ValueError("--cfg {}: not valid YAML: {}".format(path, str(error).replace("\n", " ")))
        if not isinstance(content, dict):
            raise ValueError("--cfg {}: expected ADVENT's config, a mapping such as TRAIN: {{DA_METHOD: AdvEnt}}"
                             .format(path))
        self.path, self.keys = path, {}
        known = set(ADVENT_COMMON) | {"TRAIN." + k for k in ADVENT_TRAIN} | {"TEST." + k for k in ADVENT_TEST}
        for section, value in content.items():
            items = value.items() if section in ("TRAIN", "TEST") and isinstance(value, dict) else [(None, value)]
            for key, item in items:
                name = str(section) if key is None else "{}.{}".format(section, key)
                if name not in known:
                    raise ValueError("--cfg {}: {} is not a key of ADVENT's config (domain_adaptation/config.py)"
                                     .format(path, name))
                self.keys[name] = item

    def __contains__(self, key):
        return key in self.keys

    def get(self, key, default=None):
        return self.keys.get(key, default)

    def value(self, key, convert):
        try:
            return convert(self.keys[key])
        except (TypeError, ValueError) as error:
            raise ValueError("--cfg {}: {}: {!r}: {}".format(self.path, key, self.keys[key], error))

    def convert(self, table):
        """{setting: value} of the keys in ``table`` ({key: (setting or None, conversion)}) the file names."""
        settings = {}
        for key, (name, convert) in table.items():
            if key in self.keys:
                value = self.value(key, convert)
                if name is not None:
                    settings[name] = value
        return settings

    def snapshot_dir(self, given):
        """``given``, else ADVENT's EXP_ROOT_SNAPSHOT/EXP_NAME, the name made as ADVENT makes it."""
        if given:
            return str(given)
        name = self.get("EXP_NAME") or "{}2{}_DeepLabv2_{}".format(
            self.get("SOURCE", "GTA"), self.get("TARGET", "Cityscapes"), self.get("TRAIN.DA_METHOD", "AdvEnt"))
        root = self.get("EXP_ROOT_SNAPSHOT") or os.path.join(str(self.get("EXP_ROOT", "experiments")), "snapshots")
        return os.path.join(str(root), str(name))


def _domain(value):
    if value not in ADVENT_DOMAINS:
        raise ValueError("expected one of {}".format(", ".join(ADVENT_DOMAINS)))
    return ADVENT_DOMAINS[value]


def _size(value):
    width, height = (int(v) for v in value)
    return width, height


def _one_of(choices):
    def check(value):
        if value not in choices:
            raise ValueError("expected one of {}".format(", ".join(choices)))
        return value
    return check


def _only(expected, what):
    """A key whose other values would select something this project does not have."""
    def check(value):
        values = value if isinstance(value, (list, tuple)) and not isinstance(expected, tuple) else [value]
        for one in values:
            if not (np.allclose(one, expected) if isinstance(expected, tuple) else one == expected):
                raise ValueError("only {!r} is supported here ({})".format(expected, what))
    return check


COMMON_KEYS = {"SOURCE": ("source", _domain), "TARGET": ("target", _domain), "NUM_WORKERS": ("num_workers", int),
               "NUM_CLASSES": ("num_classes", int), "GPU_ID": ("gpu", int)}
NETWORK_KEYS = {"MODEL": (None, _only("DeepLabv2", "DeepLab-v2 ResNet-101: --model DeeplabMulti4")),
                "MULTI_LEVEL": (None, _only(True, "both heads")),
                "IMG_MEAN": (None, _only(ADVENT_MEAN_BGR, "the ImageNet mean in BGR"))}
TRAIN_KEYS = dict(COMMON_KEYS, **{
    "DATA_DIRECTORY_SOURCE": ("data_dir", str), "DATA_DIRECTORY_TARGET": ("data_dir_target", str),
    "TRAIN.SET_TARGET": ("set", str), "TRAIN.IGNORE_LABEL": ("ignore_label", int),
    "TRAIN.INPUT_SIZE_SOURCE": ("input_size", _size), "TRAIN.INPUT_SIZE_TARGET": ("input_size_target", _size),
    "TRAIN.RESTORE_FROM": ("restore_from", str), "TRAIN.LEARNING_RATE": ("learning_rate", float),
    "TRAIN.MOMENTUM": ("momentum", float), "TRAIN.WEIGHT_DECAY": ("weight_decay", float),
    "TRAIN.POWER": ("power", float), "TRAIN.DA_METHOD": ("da_method", _one_of(DA_METHODS)),
    "TRAIN.LEARNING_RATE_D": ("learning_rate_D", float), "TRAIN.MAX_ITERS": ("num_steps", int),
    "TRAIN.EARLY_STOP": ("num_steps_stop", int), "TRAIN.SAVE_PRED_EVERY": ("save_pred_every", int),
    "TRAIN.RANDOM_SEED": ("random_seed", int), "TRAIN.TENSORBOARD_VIZRATE": ("picture_every", int)})
TRAIN_KEYS.update(("TRAIN." + key, value) for key, value in NETWORK_KEYS.items())
TRAIN_KEYS.update(("TRAIN.LAMBDA_" + part, ("lambda_" + part.lower(), float)) for part in (
    "SEG_MAIN", "SEG_AUX", "ADV_MAIN", "ADV_AUX", "ENT_MAIN", "ENT_AUX"))
TEST_KEYS = dict(COMMON_KEYS, **{
    "DATA_DIRECTORY_TARGET": ("data_dir", str), "TEST.SET_TARGET": ("set", str),
    "TEST.BATCH_SIZE_TARGET": ("batch_size", int), "TEST.INPUT_SIZE_TARGET": ("input_size", _size),
    "TEST.OUTPUT_SIZE_TARGET": (None, _only((2048, 1024), "predictions at the labels' size")),
    "TEST.MODE": (None, _one_of(("single", "best")))})
TEST_KEYS.update(("TEST." + key, value) for key, value in NETWORK_KEYS.items())


def read_advent_config(path):
    """{training setting: value} of ADVENT's config at ``path`` (its TEST section is evaluation's)."""
    config = AdventConfig(path)
    settings = config.convert(TRAIN_KEYS)
    sizes = {config.get("TRAIN.BATCH_SIZE_SOURCE", 1), config.get("TRAIN.BATCH_SIZE_TARGET", 1)}
    if len(sizes) > 1:
        raise ValueError("--cfg {}: TRAIN.BATCH_SIZE_SOURCE and TRAIN.BATCH_SIZE_TARGET differ; here both domains "
                         "have --batch-size images".format(path))
    if "TRAIN.BATCH_SIZE_SOURCE" in config or "TRAIN.BATCH_SIZE_TARGET" in config:
        settings["batch_size"] = int(sizes.pop())
    for key, name, split in (("DATA_LIST_SOURCE", "data_list", config.get("TRAIN.SET_SOURCE", "all")),
                             ("DATA_LIST_TARGET", "data_list_target", config.get("TRAIN.SET_TARGET", "train"))):
        if key in config:
            settings[name] = str(config.get(key)).format(split)
    settings["snapshot_dir"] = config.snapshot_dir(config.get("TRAIN.SNAPSHOT_DIR"))
    return settings


def read_advent_test_config(path):
    """{evaluate_cityscapes.py setting: value} of ADVENT's config at ``path``: its TEST section.
    Mode ``single`` scores TEST.RESTORE_FROM (several: their ensemble, TEST.MODEL_WEIGHT), mode
    ``best`` every snapshot of TEST.SNAPSHOT_DIR (else the training's EXP_ROOT_SNAPSHOT/EXP_NAME)."""
    config = AdventConfig(path)
    settings = config.convert(TEST_KEYS)
    if "DATA_LIST_TARGET" in config:
        settings["data_list"] = str(config.get("DATA_LIST_TARGET")).format(config.get("TEST.SET_TARGET", "val"))
    if config.get("TEST.MODE", "best") == "best":
        directories = [d for d in config.get("TEST.SNAPSHOT_DIR", [""]) if d] or [""]
        if len(directories) > 1:
            raise ValueError("--cfg {}: TEST.MODE best scores one run's snapshots; give one TEST.SNAPSHOT_DIR".format(
                path))
        settings["restore_from"] = [config.snapshot_dir(directories[0])]
    else:
        if not any(config.get("TEST.RESTORE_FROM", [])):
            raise ValueError("--cfg {}: TEST.MODE single scores TEST.RESTORE_FROM, which is not given".format(path))
        settings["restore_from"] = [str(p) for p in config.value("TEST.RESTORE_FROM", list)]
        if "TEST.MODEL_WEIGHT" in config and len(settings["restore_from"]) > 1:
            settings["model_weights"] = config.value("TEST.MODEL_WEIGHT", lambda v: [float(w) for w in v])
    settings["model"] = FOUR_BRANCHES
    return settings


class Advent(Method):
    description = ("ADVENT (CVPR 2019): MinEnt and AdvEnt, entropy minimisation on the target, GTA5 or SYNTHIA -> "
                   "Cityscapes or between your own domains.")
    recipes = RECIPES
    default_recipe = "advent"  # the reference's configuration, which reached the paper's numbers
    params = PARAMS
    part_weights = {"D1": "AdvEnt's conv4-head (aux) discriminator", "D2": "AdvEnt's conv5-head (main) discriminator"}
    run_defaults = dict(num_steps_stop=120000, save_pred_every=2000, model=FOUR_BRANCHES)
    read_config = staticmethod(read_advent_config)

    def __init__(self, settings):
        super().__init__(settings)
        self.source, self.target = make_source(settings), make_target(settings)
        paddle.seed(settings.random_seed)
        model = build_model(settings.model, num_classes=settings.num_classes, bn=settings.bn)
        model.train()
        self.nets["model"], self.state["model"] = model, build_sgd(model, settings)
        self.optimizers.append(self.state["model"])
        if adversarial(settings):
            discriminators = {name: FCDiscriminator(num_classes=settings.num_classes) for name in ("D1", "D2")}
            for net in discriminators.values():
                net.train()
            self.add_discriminators(discriminators)

    @property
    def loss_names(self):
        names = ("seg_src_main", "seg_src_aux")
        if minimises_entropy(self.args):
            names += ("ent_trg_main", "ent_trg_aux")
        if adversarial(self.args):
            names += ("adv_trg_main", "adv_trg_aux", "d_main", "d_aux")
        return names

    @classmethod
    def check_flags(cls, settings):
        if not adversarial(settings) and (settings.restore_from_D1 or settings.restore_from_D2):
            return ["--da-method {} trains no discriminator: drop --restore-from-D1/-D2".format(settings.da_method)]
        return []

    def describe(self):
        lines = ["ADVENT {}, network {}".format(self.args.da_method, self.args.model)]
        if self.args.model != FOUR_BRANCHES:
            lines.append("--model {}: AdaptSegNet's two-branch classifiers, not ADVENT's four".format(self.args.model))
        return lines + [describe(self.optimizers[0], self.args.sgd_groups)]

    def load_initial_weights(self, log):
        super().load_initial_weights(log)
        model = self.nets["model"]
        if self.args.model == FOUR_BRANCHES and self.args.restore_from and trained_with_two_branches(
                {name: value.numpy() for name, value in model.state_dict().items() if ".conv2d_list." in name}):
            log("warning: --restore-from {}: branches 2 and 3 of its classifiers are untrained (still at their "
                "initialisation): an AdaptSegNet model, whose forward sums branches 0 and 1 only; --model {} adds "
                "the untrained branches to its output. Give --model DeeplabMulti to keep its two-branch "
                "forward".format(self.args.restore_from, FOUR_BRANCHES))

    def preflight(self, use_gpu, gpu_id, world_size):
        """On a GPU, stop before iteration 1 when the batch does not fit the card (float32's estimate:
        not with --amp)."""
        if use_gpu and self.args.amp == "off":
            args = self.args
            check_gpu_memory(args, lambda batch_size: estimate_memory(
                batch_size, args.input_size, args.input_size_target, args.bn, args.num_classes,
                model=self.nets["model"], on_gpu=True), world_size=world_size, gpu_id=gpu_id)

    def step(self, source, target, scale, seed):
        args, amp, model = self.args, self.amp, self.nets["model"]
        losses = {}

        # 1. Supervised segmentation on the source domain, both heads.
        source_aux, source_main = (upsample(out, args.input_size) for out in amp.forward(model, source.images))
        losses["seg_src_main"] = seg_loss(source_main, source.labels, args.ignore_label)
        losses["seg_src_aux"] = seg_loss(source_aux, source.labels, args.ignore_label)
        amp.backward((args.lambda_seg_main * losses["seg_src_main"] + args.lambda_seg_aux * losses["seg_src_aux"])
                     * scale)

        # 2. The target: lower its entropy, directly (MinEnt) or through the frozen discriminators (AdvEnt).
        discriminators = [self.nets["D1"], self.nets["D2"]] if adversarial(args) else []
        set_trainable(discriminators, False)
        target_aux, target_main = (upsample(out, args.input_size_target) for out in amp.forward(model, target.images))
        prob_aux, prob_main = F.softmax(target_aux, axis=1), F.softmax(target_main, axis=1)
        target_loss = 0.0
        if minimises_entropy(args):
            losses["ent_trg_main"], losses["ent_trg_aux"] = entropy_loss(prob_main), entropy_loss(prob_aux)
            target_loss += args.lambda_ent_main * losses["ent_trg_main"] + args.lambda_ent_aux * losses["ent_trg_aux"]
        if adversarial(args):
            D1, D2 = discriminators
            losses["adv_trg_main"] = adv_loss(amp.forward(D2, self_information(prob_main)), SOURCE_LABEL)
            losses["adv_trg_aux"] = adv_loss(amp.forward(D1, self_information(prob_aux)), SOURCE_LABEL)
            target_loss += args.lambda_adv_main * losses["adv_trg_main"] + args.lambda_adv_aux * losses["adv_trg_aux"]
        amp.backward(target_loss * scale)
        set_trainable(discriminators, True)
        if not adversarial(args):
            return losses

        # 3. Train the discriminators to tell source maps (0) from target maps (1), each half weighted 1/2.
        losses["d_main"] = losses["d_aux"] = 0.0
        for (aux, main), label in (((source_aux, source_main), SOURCE_LABEL),
                                   ((target_aux, target_main), TARGET_LABEL)):
            half_aux = adv_loss(amp.forward(D1, self_information(F.softmax(aux.detach(), axis=1))), label) / 2
            amp.backward(half_aux * scale)
            half_main = adv_loss(amp.forward(D2, self_information(F.softmax(main.detach(), axis=1))), label) / 2
            amp.backward(half_main * scale)
            losses["d_aux"] = losses["d_aux"] + half_aux.detach()
            losses["d_main"] = losses["d_main"] + half_main.detach()
        return losses
