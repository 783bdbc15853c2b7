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
from utils.files.checkpoint import PaddleOptimizerState
from utils.files.weights import CLASSIFIER_PREFIXES, WeightsError, load_weights
from utils.loss import GAN_KINDS, SOURCE_LABEL, TARGET_LABEL, adv_loss, seg_loss
from utils.training.amp import NO_AMP, MixedPrecision
from utils.training.optimizer import build_sgd, describe, set_learning_rates
from utils.training.options import RECIPE_DEFAULT, check_arguments, training_parser
from utils.training.recipes import ADAPTSEGNET
from utils.training.session import check_finite, command_line, run_training, set_trainable, upsample

LOSS_NAMES = ("seg1", "seg2", "adv_target1", "adv_target2", "D1", "D2")
# The only configuration shown to reach the paper's accuracy in Paddle (README: Which recipe).
DEFAULT_RECIPE = "paddle-port"


def adaptation_step(model, D1, D2, source_batch, target_batch, args, scale=1.0, amp=NO_AMP):
    """Steps 1-3 of an iteration on one (sub-)batch; gradients accumulate, nothing is stepped."""
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
        loss_D1 += float(half_D1)
        loss_D2 += float(half_D2)

    losses = (loss_seg1, loss_seg2, loss_adv_target1, loss_adv_target2, loss_D1, loss_D2)
    return {name: float(value) * scale for name, value in zip(LOSS_NAMES, losses)}


def train_iteration(nets, optimizers, batches, iteration, args, parallel=None, amp=NO_AMP):
    """One iteration: steps 1-3 over --iter-size sub-batches, then step 4 for all three optimizers.

    With ``parallel`` (a distributed job), gradients and logged losses are averaged over the
    ranks before the optimizers step, so every rank takes the same step.
    """
    model, D1, D2 = nets
    rates = set_learning_rates(optimizers, iteration, args)
    losses = dict.fromkeys(LOSS_NAMES, 0.0)
    for source_batch, target_batch in batches:
        for name, value in adaptation_step(model, D1, D2, source_batch, target_batch, args,
                                           scale=1.0 / args.iter_size, amp=amp).items():
            losses[name] += value
    if parallel is not None:
        losses = parallel.average_values(losses)
        parallel.average_gradients(nets)
    check_finite(losses, iteration, amp)

    # 4. Step the segmentation network and both discriminators.
    amp.step(optimizers, [p for net in nets for p in net.parameters()])
    return losses, dict(rates, **amp.scalars())


def build_networks(args):
    """G, D1, D2 and their optimizers: SGD (as --sgd-groups says) for G, Adam for both Ds."""
    paddle.seed(args.random_seed)
    model = build_model(args.model, num_classes=args.num_classes, bn=args.bn)
    D1 = FCDiscriminator(num_classes=args.num_classes)
    D2 = FCDiscriminator(num_classes=args.num_classes)
    for net in (model, D1, D2):
        net.train()
    optimizers = (build_sgd(model, args),) + tuple(
        paddle.optimizer.Adam(learning_rate=args.learning_rate_D, beta1=0.9, beta2=0.99, parameters=D.parameters())
        for D in (D1, D2))
    return (model, D1, D2), optimizers


class AdaptSegNet(object):
    """The method as the training session sees it (see utils/training/session.py)."""

    recipes = ADAPTSEGNET
    parts = ("D1", "D2")
    invariants = ("lambda_seg", "lambda_adv_target1", "lambda_adv_target2", "gan")

    def __init__(self, args):
        self.args = args
        self.source = make_source(args)
        self.target = make_target(args)
        self.networks, self.optimizers = build_networks(args)
        model, D1, D2 = self.networks
        self.nets = {"model": model, "D1": D1, "D2": D2}
        self.amp = MixedPrecision(args.amp)
        self.state = {"model": self.optimizers[0], "D1": PaddleOptimizerState(self.optimizers[1], D1),
                      "D2": PaddleOptimizerState(self.optimizers[2], D2)}
        if self.amp.mode == "fp16":
            self.state["amp"] = self.amp  # the loss scale

    def describe(self):
        return [describe(self.optimizers[0], self.args.sgd_groups)]

    def load_initial_weights(self, log):
        """--restore-from (and -D1/-D2), loaded strictly. The init file holds a backbone only: its
        classifiers start fresh, as in the reference; a complete state dict loads every key."""
        args, (model, D1, D2) = self.args, self.networks
        if args.restore_from is None:
            log("--from-scratch: the segmentation network starts from random initialisation")
        else:
            report = load_weights(model, args.restore_from, allow_fresh=CLASSIFIER_PREFIXES)
            if report.fresh and report.kind != "init" and set(report.fresh) != set(CLASSIFIER_PREFIXES):
                raise WeightsError("{}: has one classifier but not the other ({} missing)".format(
                    args.restore_from, ", ".join(report.fresh)))
            log(report.summary())
        for D, path in ((D1, args.restore_from_D1), (D2, args.restore_from_D2)):
            if path is not None:
                log(load_weights(D, path).summary())

    def iteration(self, batches, iteration, parallel):
        return train_iteration(self.networks, self.optimizers, batches, iteration, self.args, parallel, self.amp)


def get_arguments(argv=None):
    parser = training_parser("AdaptSegNet multi-level training: GTA5 or SYNTHIA -> Cityscapes, or Cityscapes "
                             "-> a city of the NTHU dataset.", {}, ADAPTSEGNET, DEFAULT_RECIPE)
    parser.add_argument("--lambda-seg", type=float, default=None,
                        help="weight of the conv4 head's seg loss" + RECIPE_DEFAULT)
    parser.add_argument("--lambda-adv-target1", type=float, default=None,
                        help="weight of the conv4 head's adversarial loss" + RECIPE_DEFAULT)
    parser.add_argument("--lambda-adv-target2", type=float, default=None,
                        help="weight of the conv5 head's adversarial loss" + RECIPE_DEFAULT)
    parser.add_argument("--gan", default="Vanilla", choices=GAN_KINDS, help="Vanilla: BCE; LS: least squares")
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
    return check_arguments(parser, args, ADAPTSEGNET, DEFAULT_RECIPE)


def main(argv=None):
    return run_training(get_arguments(argv), AdaptSegNet)


if __name__ == "__main__":
    sys.exit(command_line(main))
