"""AdaptSegNet, multi-level (Tsai et al., CVPR 2018): adversarial adaptation in the output space.

Each iteration, on every sub-batch (``step``):

1. the segmentation loss of both heads on the source (conv4's weighted by --lambda-seg);
2. the target's outputs made to look like the source's to the two frozen discriminators (one per
   head, weighted by --lambda-adv-target1/2);
3. each discriminator trained to tell source outputs (0) from target outputs (1), each half 1/2;

then (the engine) 4. G's SGD and both discriminators' Adam step.
"""
import paddle
import paddle.nn.functional as F

from dataset.sources import make_source, make_target
from model import FCDiscriminator, build_model
from utils.loss import GAN_KINDS, SOURCE_LABEL, TARGET_LABEL, adv_loss, seg_loss
from utils.training.memory import (FLOAT_BYTES, LOGIT_COPIES, MemoryEstimate, SavedTensors, check_gpu_memory,
                                   pass_bytes, tensors_bytes)
from utils.training.method import Method, set_trainable, upsample
from utils.training.optimizer import build_sgd, describe
from utils.training.params import Param, Recipe, same_in

RECIPES = [
    Recipe("paddle-port", "the published Paddle reproduction", "42.35 mIoU at 150k iterations, best snapshot 42.72 (110k)"),
    Recipe("authors", "the authors' PyTorch code", "42.4 mIoU (paper); the released model evaluates to 42.35"),
    Recipe("paper", "the paper's text", "none: nobody has published this run"),
]

PARAMS = [
    Param("lambda_seg", same_in(RECIPES, 0.1), "weight of the conv4 head's seg loss", type=float),
    Param("lambda_adv_target1", same_in(RECIPES, 2e-4), "weight of the conv4 head's adversarial loss", type=float),
    Param("lambda_adv_target2", same_in(RECIPES, 1e-3), "weight of the conv5 head's adversarial loss", type=float),
    Param("gan", "Vanilla", "Vanilla: BCE; LS: least squares", choices=GAN_KINDS),
    Param("source_only", False, "the baseline of the paper's tables: train on the source alone, no target image and "
          "no discriminator (utils/methods/source_only.py)", earlier=False, action="store_true"),
]


def build_networks(settings):
    """G and its SGD (as --sgd-groups says); {"D1": D1, "D2": D2} (their Adam: Method.add_discriminators)."""
    paddle.seed(settings.random_seed)
    model = build_model(settings.model, num_classes=settings.num_classes, bn=settings.bn)
    discriminators = {name: FCDiscriminator(num_classes=settings.num_classes) for name in ("D1", "D2")}
    for net in [model] + list(discriminators.values()):
        net.train()
    return model, build_sgd(model, settings), discriminators


def estimate_memory(batch_size, source_size, target_size, bn="frozen", num_classes=19, model=None,
                    discriminator=None, on_gpu=False):
    """Peak memory of one AdaptSegNet iteration on one device: ``batch_size``
    images per domain, ``source_size`` and ``target_size`` as (width, height), float32, with the
    convolution workspace of a CPU or (``on_gpu``) of cuDNN. ``model`` and ``discriminator`` are
    probed (not changed); by default a fresh DeeplabMulti (``bn``) and FCDiscriminator. See
    utils/training/memory.py for what is counted. Returns a MemoryEstimate."""
    model = model if model is not None else build_model("DeeplabMulti", num_classes=num_classes, bn=bn)
    discriminator = discriminator if discriminator is not None else FCDiscriminator(num_classes)
    saved_g, saved_d = SavedTensors(model, 3), SavedTensors(discriminator, num_classes)
    trainable_g = [p for p in model.parameters() if not p.stop_gradient]
    weights_d = list(discriminator.parameters())
    persistent = {
        "weights": tensors_bytes(list(model.parameters()) + list(model.buffers())) + 2 * tensors_bytes(weights_d),
        "gradients": tensors_bytes(trainable_g) + 2 * tensors_bytes(weights_d),
        "optimizer state": tensors_bytes(trainable_g) + 2 * 2 * tensors_bytes(weights_d),
    }

    def logits(size):
        return batch_size * num_classes * size[0] * size[1] * FLOAT_BYTES

    # step: step 1's backward frees its activations before step 2's forward; the
    # source outputs live on until step 3, the target outputs from step 2 to step 3.
    kept_source_outputs = 2 * logits(source_size)
    passes = {
        "source pass": (pass_bytes(saved_g, source_size, batch_size, on_gpu)
                        + 2 * LOGIT_COPIES * logits(source_size)),
        "target pass": (kept_source_outputs + pass_bytes(saved_g, target_size, batch_size, on_gpu)
                        + 2 * pass_bytes(saved_d, target_size, batch_size, on_gpu)
                        + 2 * LOGIT_COPIES * logits(target_size)),
        "discriminator pass": (kept_source_outputs + 2 * logits(target_size)
                               + max(pass_bytes(saved_d, size, batch_size, on_gpu) + 2 * logits(size)
                                     for size in (source_size, target_size))),
    }
    return MemoryEstimate(batch_size, persistent, passes)


class AdaptSegNet(Method):
    description = ("AdaptSegNet multi-level training: GTA5 or SYNTHIA -> Cityscapes, Cityscapes -> a city of the NTHU "
                   "dataset, or between your own domains (--source/--target custom).")
    recipes = RECIPES
    # The only configuration shown to reach the paper's accuracy in Paddle (README: Which recipe).
    default_recipe = "paddle-port"
    params = PARAMS
    loss_names = ("seg1", "seg2", "adv_target1", "adv_target2", "D1", "D2")
    part_weights = {"D1": "the conv4-head discriminator", "D2": "the conv5-head discriminator"}

    def __init__(self, settings):
        super().__init__(settings)
        self.source = make_source(settings)
        self.target = make_target(settings)
        model, sgd, discriminators = build_networks(settings)
        self.nets["model"], self.state["model"] = model, sgd
        self.optimizers.append(sgd)
        self.add_discriminators(discriminators)

    @classmethod
    def variant(cls, settings):
        if settings.source_only:
            from utils.methods.source_only import SourceOnly  # (it builds on this file)
            return SourceOnly
        return cls

    @classmethod
    def check_flags(cls, settings):
        problems = []
        if settings.random_scale:
            problems.append("--random-scale is not supported: the original accepted it but never rescaled")
        if settings.source_only and (settings.restore_from_D1 or settings.restore_from_D2):
            problems.append("--source-only trains no discriminator: drop --restore-from-D1/-D2")
        return problems

    @classmethod
    def add_legacy_flags(cls, parser):
        for name in ("--is-training", "--not-restore-last"):
            parser.add_argument(name, action="store_true", help="accepted for compatibility; no effect")
        parser.add_argument("--save-num-images", type=int, default=2, help="accepted for compatibility; no effect")
        parser.add_argument("--random-scale", action="store_true", help="not supported: the original never rescaled")

    def describe(self):
        return [describe(self.optimizers[0], self.args.sgd_groups)]

    def preflight(self, use_gpu, gpu_id, world_size):
        """On a GPU, stop before iteration 1 when the batch does not fit the card, with the command that
        does (utils/training/memory.py; its estimate is float32's, so not with --amp)."""
        if use_gpu and self.args.amp == "off":
            args = self.args
            check_gpu_memory(args, lambda batch_size: estimate_memory(
                batch_size, args.input_size, args.input_size_target, args.bn, args.num_classes, model=self.nets["model"],
                on_gpu=True), world_size=world_size, gpu_id=gpu_id)

    def step(self, source, target, scale, seed):
        args, amp = self.args, self.amp
        model, D1, D2 = self.nets["model"], self.nets["D1"], self.nets["D2"]

        # 1. Supervised segmentation on the source domain, both heads.
        source_out1, source_out2 = (upsample(out, args.input_size) for out in amp.forward(model, source.images))
        loss_seg1 = seg_loss(source_out1, source.labels, args.ignore_label)
        loss_seg2 = seg_loss(source_out2, source.labels, args.ignore_label)
        amp.backward((loss_seg2 + args.lambda_seg * loss_seg1) * scale)

        # 2. Make target outputs look like source outputs to the frozen discriminators.
        set_trainable([D1, D2], False)
        target_out1, target_out2 = (upsample(out, args.input_size_target)
                                    for out in amp.forward(model, target.images))
        loss_adv_target1 = adv_loss(amp.forward(D1, F.softmax(target_out1, axis=1)), SOURCE_LABEL, args.gan)
        loss_adv_target2 = adv_loss(amp.forward(D2, F.softmax(target_out2, axis=1)), SOURCE_LABEL, args.gan)
        amp.backward((args.lambda_adv_target1 * loss_adv_target1 + args.lambda_adv_target2 * loss_adv_target2) * scale)
        set_trainable([D1, D2], True)

        # 3. Train the discriminators to tell source (0) from target (1), each half weighted 1/2.
        loss_D1 = loss_D2 = 0.0
        for (out1, out2), label in (((source_out1, source_out2), SOURCE_LABEL),
                                    ((target_out1, target_out2), TARGET_LABEL)):
            half_D1 = adv_loss(amp.forward(D1, F.softmax(out1.detach(), axis=1)), label, args.gan) / 2
            half_D2 = adv_loss(amp.forward(D2, F.softmax(out2.detach(), axis=1)), label, args.gan) / 2
            amp.backward(half_D1 * scale)
            amp.backward(half_D2 * scale)
            loss_D1 = loss_D1 + half_D1.detach()
            loss_D2 = loss_D2 + half_D2.detach()

        return dict(zip(self.loss_names, (loss_seg1, loss_seg2, loss_adv_target1, loss_adv_target2, loss_D1, loss_D2)))
