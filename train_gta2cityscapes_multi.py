"""AdaptSegNet, multi-level: adversarial adaptation in the output space, GTA5 -> Cityscapes (and
SYNTHIA -> Cityscapes, Cityscapes -> an NTHU city).

    python train_gta2cityscapes_multi.py --restore-from DeepLab_resnet_pretrained_init-f81d91e8.pth \
        --snapshot-dir snapshots/GTA2Cityscapes_multi --random-mirror --continue-train

Without --recipe it trains the published Paddle port's configuration (--recipe paddle-port; README:
Which recipe); --recipe authors is the authors' code's. Each iteration does the method's four steps
(adaptation_step and train_iteration); everything around them (resuming, logging, snapshots,
validation, stopping) is utils/training/session.py. The same command in every session: it
resumes the run when the snapshot directory has a snapshot and starts it otherwise.
"""
import utils.runtime  # noqa: F401  (first: settings that must precede paddle)

import sys

import paddle
import paddle.nn.functional as F

from dataset.sources import make_source, make_target
from model import FCDiscriminator, build_model
from utils.loss import GAN_KINDS, SOURCE_LABEL, TARGET_LABEL, adv_loss, seg_loss
from utils.training.amp import NO_AMP
from utils.training.memory import check_gpu_memory
from utils.training.method import Method, average_losses, check_finite, set_trainable, upsample
from utils.training.optimizer import build_sgd, describe, set_learning_rates
from utils.training.options import RECIPE_DEFAULT, check_arguments, training_parser
from utils.training.recipes import ADAPTSEGNET
from utils.training.session import command_line, run_training
from utils.training.source_only import SourceOnly

LOSS_NAMES = ("seg1", "seg2", "adv_target1", "adv_target2", "D1", "D2")
# The only configuration shown to reach the paper's accuracy in Paddle (README: Which recipe).
DEFAULT_RECIPE = "paddle-port"


def adaptation_step(model, D1, D2, source_batch, target_batch, args, scale=1.0, amp=NO_AMP):
    """Steps 1-3 of an iteration on one (sub-)batch; gradients (times ``scale``) accumulate,
    nothing is stepped. Returns {loss name: tensor}."""
    source_images, source_labels = source_batch[:2]
    target_images = target_batch[0]

    # 1. Supervised segmentation on the source domain, both heads.
    source_out1, source_out2 = (upsample(out, args.input_size) for out in amp.forward(model, source_images))
    loss_seg1 = seg_loss(source_out1, source_labels, args.ignore_label)
    loss_seg2 = seg_loss(source_out2, source_labels, args.ignore_label)
    amp.backward((loss_seg2 + args.lambda_seg * loss_seg1) * scale)

    # 2. Make target outputs look like source outputs to the frozen discriminators.
    set_trainable([D1, D2], False)
    target_out1, target_out2 = (upsample(out, args.input_size_target) for out in amp.forward(model, target_images))
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

    losses = (loss_seg1, loss_seg2, loss_adv_target1, loss_adv_target2, loss_D1, loss_D2)
    return dict(zip(LOSS_NAMES, losses))


def train_iteration(nets, optimizers, batches, iteration, args, parallel=None, amp=NO_AMP):
    """One iteration: steps 1-3 over --iter-size sub-batches, then step 4 for all three optimizers.
    Returns the losses averaged over the sub-batches, read from the device once.

    With ``parallel`` (a distributed job), gradients and logged losses are averaged over the
    ranks before the optimizers step, so every rank takes the same step.
    """
    model, D1, D2 = nets
    rates = set_learning_rates(optimizers, iteration, args)
    per_batch = [adaptation_step(model, D1, D2, source_batch, target_batch, args, scale=1.0 / args.iter_size, amp=amp)
                 for source_batch, target_batch in batches]
    losses = average_losses(per_batch, LOSS_NAMES)
    if parallel is not None:
        losses = parallel.average_values(losses)
        parallel.average_gradients(nets)
    check_finite(losses, iteration, amp)

    # 4. Step the segmentation network and both discriminators.
    amp.step(optimizers, [p for net in nets for p in net.parameters()])
    return losses, dict(rates, **amp.scalars())


def build_networks(args):
    """G and its SGD (as --sgd-groups says), D1 and D2 (their Adam: Method.add_discriminators)."""
    paddle.seed(args.random_seed)
    model = build_model(args.model, num_classes=args.num_classes, bn=args.bn)
    discriminators = (FCDiscriminator(num_classes=args.num_classes), FCDiscriminator(num_classes=args.num_classes))
    for net in (model,) + discriminators:
        net.train()
    return model, build_sgd(model, args), discriminators


class AdaptSegNet(Method):
    """Multi-level adversarial adaptation in the output space (Tsai et al., CVPR 2018)."""

    recipes = ADAPTSEGNET
    invariants = ("lambda_seg", "lambda_adv_target1", "lambda_adv_target2", "gan", "source_only")
    weight_flags = ("restore_from", "restore_from_D1", "restore_from_D2")

    def __init__(self, args):
        super().__init__(args)
        self.source = make_source(args)
        self.target = make_target(args)
        model, sgd, (D1, D2) = build_networks(args)
        self.nets["model"], self.state["model"] = model, sgd
        self.optimizers = [sgd] + self.add_discriminators({"D1": D1, "D2": D2})
        self.networks = (model, D1, D2)

    def describe(self):
        return [describe(self.optimizers[0], self.args.sgd_groups)]

    def load_initial_weights(self, log):
        self.load_segmentation_weights(log)
        self.load_part_weights({"D1": "restore_from_D1", "D2": "restore_from_D2"}, log)

    def preflight(self, use_gpu, gpu_id, world_size):
        """On a GPU, stop before iteration 1 when the batch does not fit the card, with the command that
        does (utils/training/memory.py; its estimate is float32's, so not with --amp)."""
        if use_gpu and self.args.amp == "off":
            check_gpu_memory(self.args, world_size=world_size, model=self.networks[0], gpu_id=gpu_id)

    def iteration(self, batches, iteration, parallel):
        return train_iteration(self.networks, self.optimizers, batches, iteration, self.args, parallel, self.amp)


def get_arguments(argv=None):
    parser = training_parser("AdaptSegNet multi-level training: GTA5 or SYNTHIA -> Cityscapes, Cityscapes -> "
                             "a city of the NTHU dataset, or between your own domains (--source/--target custom).", {}, ADAPTSEGNET, DEFAULT_RECIPE)
    parser.add_argument("--lambda-seg", type=float, default=None,
                        help="weight of the conv4 head's seg loss" + RECIPE_DEFAULT)
    parser.add_argument("--lambda-adv-target1", type=float, default=None,
                        help="weight of the conv4 head's adversarial loss" + RECIPE_DEFAULT)
    parser.add_argument("--lambda-adv-target2", type=float, default=None,
                        help="weight of the conv5 head's adversarial loss" + RECIPE_DEFAULT)
    parser.add_argument("--gan", default="Vanilla", choices=GAN_KINDS, help="Vanilla: BCE; LS: least squares")
    parser.add_argument("--source-only", action="store_true",
                        help="the baseline of the paper's tables: train on the source alone, no target image and no "
                             "discriminator (utils/training/source_only.py)")
    parser.add_argument("--restore-from-D1", default=None,
                        help="initial weights of the conv4-head discriminator (.pth or .pdparams)")
    parser.add_argument("--restore-from-D2", default=None,
                        help="initial weights of the conv5-head discriminator (.pth or .pdparams)")
    for flag in ("--is-training", "--not-restore-last"):
        parser.add_argument(flag, action="store_true", help="accepted for compatibility; no effect")
    parser.add_argument("--save-num-images", type=int, default=2, help="accepted for compatibility; no effect")
    parser.add_argument("--random-scale", action="store_true", help="not supported: the original never rescaled")
    args = parser.parse_args(argv)
    if args.random_scale:
        parser.error("--random-scale is not supported: the original accepted it but never rescaled")
    if args.source_only and (args.restore_from_D1 or args.restore_from_D2):
        parser.error("--source-only trains no discriminator: drop --restore-from-D1/-D2")
    return check_arguments(parser, args, ADAPTSEGNET, DEFAULT_RECIPE)


def main(argv=None):
    args = get_arguments(argv)
    return run_training(args, SourceOnly if args.source_only else AdaptSegNet)


if __name__ == "__main__":
    sys.exit(command_line(main))
