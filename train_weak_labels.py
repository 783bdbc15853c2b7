"""Domain adaptation with weak labels (Paul, Tsai et al., ECCV 2020): AdaptSegNet's network and
output-space discriminator, plus image-level labels on the target domain.

    # UDA: pseudo-weak labels, category-wise alignment, pixel adaptation (48.2 mIoU in the paper)
    python train_weak_labels.py --restore-from gta5_pretrained.pth --snapshot-dir snapshots/pseudoweak \
        --use-weak --use-pseudo --use-weak-cw --use-pixeladapt --continue-train
    # WDA: image labels from the target's ground truth (53.0), or one point per class (56.4)
    python train_weak_labels.py ... --use-weak --use-weak-cw --use-pixeladapt
    python train_weak_labels.py ... --use-weak --use-pointloss --use-weak-cw --use-pixeladapt

The iteration (weak_label_step, train_iteration) follows the reference's order; everything around
it is utils/training/session.py, shared with train_gta2cityscapes_multi.py.
"""
import utils.runtime  # noqa: F401  (first: settings that must precede paddle)

import sys

import paddle
import paddle.nn.functional as F

from dataset.sources import CUSTOM, TranslatedImages, make_source, make_target
from dataset.weak_labels import SourceWithPresentClasses, Thresholds, WeakTargetDataSet
from model import CWDiscriminator, FCDiscriminator, build_model
from model.discriminator import pooled_features
from utils.loss import (SOURCE_LABEL, TARGET_LABEL, category_adversarial_loss, domain_loss, dropout, point_loss,
                        pseudo_weak_labels, seg_loss, weak_loss)
from utils.training.amp import NO_AMP
from utils.training.method import Method, average_losses, check_finite, set_trainable, upsample
from utils.training.optimizer import build_sgd, clip_grad_norm, describe, set_learning_rates
from utils.training.options import RECIPE_DEFAULT, check_arguments, training_parser
from utils.training.recipes import WEAK_LABELS
from utils.training.session import command_line, run_training

# What the reference prints, but seg1, adv1 and D1: its conv4 head and D1 are never used.
LOSS_NAMES = ("seg2", "adv_target2", "D2", "weak", "cw_adv", "cw_D", "point", "present")
# The weak-da-seg scripts' configuration (README: Which recipe).
DEFAULT_RECIPE = "authors"
# The reference's hard-coded location of CycleGAN-translated source images.
PIXELADAPT_DIRS = {"gta5": "./data/cycleGAN_output/gta5_deeplab", "synthia": "./data/cycleGAN_output/syn_deeplab"}


def weak_label_step(nets, source_batch, target_batch, args, seed, scale=1.0, amp=NO_AMP):
    """The reference's steps on one (sub-)batch; gradients (times ``scale``) accumulate, nothing is
    stepped. Returns {loss name: tensor} of the losses the mode computes.

    ``nets``: (G, D2 or None, cwD or None); ``seed``: of this sub-batch's dropout mask.
    """
    model, D2, cwD = nets
    source_images, source_labels = source_batch[:2]
    losses = {}
    source_pooled = target_pooled = source_present = weak = loss_weak = loss_point = loss_cw_adv = None

    # 1. Source: segmentation loss on the conv5 head (the reference's lambda_seg is 0).
    _, source_out, source_features = amp.forward(model, source_images, return_features=True)
    if cwD is not None:
        source_pooled = pooled_features(source_out.detach(), source_features.detach())
    source_out = upsample(source_out, args.input_size)
    loss_seg = seg_loss(source_out, source_labels, args.ignore_label)
    amp.backward(loss_seg * scale)
    losses["seg2"] = loss_seg
    if args.source_only:
        return losses

    # 2. Target: fool the frozen discriminators; weak-label and point losses.
    set_trainable([net for net in (D2, cwD) if net is not None], False)
    target_images = target_batch[0]
    _, target_out, target_features = amp.forward(model, target_images, return_features=True)
    if needs_weak_labels(args):
        weak = pseudo_weak_labels(target_out, args.pweak_th) if args.use_pseudo else target_batch[1]
    if args.use_pointloss:
        loss_point = point_loss(upsample(target_out, args.input_size_target), target_batch[2], weak,
                                images=len(target_images) if args.point_loss_all_images else 1)
    if args.use_weak:
        loss_weak = weak_loss(dropout(target_out, args.weak_dropout, seed), weak)
    if cwD is not None:
        target_pooled = pooled_features(target_out.detach(), target_features)
        loss_cw_adv = category_adversarial_loss(amp.forward(cwD, target_pooled), weak, SOURCE_LABEL, args.ls_gan)
    target_out = upsample(target_out, args.input_size_target)
    loss_adv = domain_loss(amp.forward(D2, F.softmax(target_out, axis=1)), SOURCE_LABEL, args.ls_gan)
    total = args.lambda_adv_target2 * loss_adv
    for weight, term, name in ((args.lambda_weak_target2, loss_weak, "weak"), (1.0, loss_point, "point"),
                               (args.lambda_weak_cwadv2, loss_cw_adv, "cw_adv")):
        if term is not None:
            total = total + weight * term
            losses[name] = term
    amp.backward(total * scale)
    set_trainable([net for net in (D2, cwD) if net is not None], True)
    losses["adv_target2"] = loss_adv
    if weak is not None:
        losses["present"] = weak.mean()

    # 3. The discriminators, source then target, each half weighted 1/2.
    if cwD is not None:
        source_present = source_batch[2]
    for out, pooled, domain, present in ((source_out, source_pooled, SOURCE_LABEL, source_present),
                                         (target_out, target_pooled, TARGET_LABEL, weak)):
        half_D2 = domain_loss(amp.forward(D2, F.softmax(out.detach(), axis=1)), domain, args.ls_gan) / 2
        amp.backward(half_D2 * scale)
        losses["D2"] = losses.get("D2", 0.0) + half_D2.detach()
        if cwD is not None:
            half_cw = category_adversarial_loss(amp.forward(cwD, pooled.detach()), present, domain, args.ls_gan) / 2
            amp.backward(half_cw * scale)
            losses["cw_D"] = losses.get("cw_D", 0.0) + half_cw.detach()
    return losses


def train_iteration(nets, optimizers, batches, iteration, args, parallel=None, amp=NO_AMP):
    """One iteration: the steps over --iter-size sub-batches, then the gradient of G clipped to
    norm 1 (as the reference; not when training on the source alone) and every optimizer stepped."""
    rates = set_learning_rates(optimizers, iteration, args)
    rank = parallel.rank if parallel is not None else 0
    per_batch = []
    for sub, (source_batch, target_batch) in enumerate(batches):
        seed = (args.random_seed, iteration, sub, rank)
        per_batch.append(weak_label_step(nets, source_batch, target_batch, args, seed,
                                         scale=1.0 / args.iter_size, amp=amp))
    losses = average_losses(per_batch, LOSS_NAMES)
    if parallel is not None:
        losses = parallel.average_values(losses)
        parallel.average_gradients([net for net in nets if net is not None])
    check_finite(losses, iteration, amp)
    model = nets[0]
    clip = None if args.source_only else lambda: clip_grad_norm(model.parameters(), 1.0)
    amp.step(optimizers, [p for net in nets if net is not None for p in net.parameters()], before_step=clip)
    return losses, dict(rates, **amp.scalars())


def needs_weak_labels(args):
    return args.use_weak or args.use_weak_cw or args.use_pointloss


def target_dataset(args):
    """What the mode reads of the target: nothing (source only), images (pseudo-weak labels), or
    images with image-level labels and points from the ground truth (weak supervision)."""
    if args.source_only:
        return None
    images = make_target(args)
    if not args.use_pointloss and (args.use_pseudo or not needs_weak_labels(args)):
        return images
    if args.target == CUSTOM and (args.weak_label_file is None or args.use_pointloss):
        images = make_target(args, with_labels=True)
    elif args.target != "cityscapes" and args.weak_label_file is None:
        raise ValueError("--target {}: its training images have no labels; weak supervision needs --use-pseudo "
                         "or --weak-label-file".format(args.target))
    if args.weak_label_file:
        thresholds = None  # the file says which classes are present
    elif args.target_thresholds:
        thresholds = Thresholds.from_file(args.target_thresholds, args.class_set)
    elif args.target == CUSTOM:
        thresholds = Thresholds.of_dataset(images, args.class_set)
    else:
        thresholds = Thresholds.reference("cityscapes")
    return WeakTargetDataSet(images, thresholds, with_points=args.use_pointloss, label_file=args.weak_label_file,
                             seed=args.random_seed)


class WeakLabels(Method):
    """AdaptSegNet's conv5 head and output-space discriminator, plus weak labels on the target."""

    recipes = WEAK_LABELS
    invariants = ("use_weak", "use_weak_cw", "use_pseudo", "pweak_th", "use_pointloss", "use_pixeladapt",
                  "lambda_weak_target2", "lambda_weak_cwadv2", "lambda_adv_target2", "ls_gan", "source_only",
                  "weak_dropout", "point_loss_all_images")
    weight_flags = ("restore_from", "restore_from_D2", "restore_from_cwD")

    def __init__(self, args):
        super().__init__(args)
        source = make_source(args)
        self.source_thresholds = None
        if args.use_weak_cw:  # the only use of the source's thresholds
            self.source_thresholds = Thresholds.from_file(args.source_thresholds, args.class_set) \
                if args.source_thresholds else Thresholds.of_dataset(source, args.class_set)
        if args.use_pixeladapt:
            if not (args.pixeladapt_dir or args.source in PIXELADAPT_DIRS):
                raise ValueError("--use-pixeladapt with --source {} needs --pixeladapt-dir".format(args.source))
            source = TranslatedImages(source, args.pixeladapt_dir or PIXELADAPT_DIRS[args.source])
        if args.use_weak_cw:  # the classes present in each source image, found by the loader's workers
            source = SourceWithPresentClasses(source, self.source_thresholds)
        self.source, self.target = source, target_dataset(args)
        paddle.seed(args.random_seed)
        self.networks = model, D2, cwD = self.build_networks(args)
        self.nets["model"], self.state["model"] = model, build_sgd(model, args)
        discriminators = {name: net for name, net in (("D2", D2), ("cwD", cwD)) if net is not None}
        self.optimizers = [self.state["model"]] + self.add_discriminators(discriminators)

    @staticmethod
    def build_networks(args):
        """G, and the discriminators the mode uses (None for the others)."""
        model = build_model(args.model, num_classes=args.num_classes, bn=args.bn)
        D2 = None if args.source_only else FCDiscriminator(num_classes=args.num_classes)
        cwD = CWDiscriminator(num_classes=args.num_classes) if args.use_weak_cw else None
        return model, D2, cwD

    def describe(self):
        args = self.args
        mode = "source only" if args.source_only else "{} weak labels{}{}{}".format(
            "pseudo-" if args.use_pseudo else "ground-truth", ", weak loss" if args.use_weak else "",
            ", points" if args.use_pointloss else "", ", category-wise alignment" if args.use_weak_cw else "")
        lines = ["weak-label method: {}{}".format(mode, ", pixel adaptation" if args.use_pixeladapt else ""),
                 describe(self.optimizers[0], args.sgd_groups)]
        if args.use_weak_cw:
            lines.append("source class thresholds: {}".format(self.source_thresholds.source))
        if isinstance(self.target, WeakTargetDataSet) and self.target.file_labels is None:
            lines.append("target class thresholds: {}".format(self.target.thresholds.source))
        return lines

    def load_initial_weights(self, log):
        """--restore-from (a source-only model, or the ImageNet/COCO init), -D2 and -cwD, strictly."""
        self.load_segmentation_weights(log)
        self.load_part_weights({"D2": "restore_from_D2", "cwD": "restore_from_cwD"}, log)

    def iteration(self, batches, iteration, parallel):
        return train_iteration(self.networks, self.optimizers, batches, iteration, self.args, parallel, self.amp)


def get_arguments(argv=None):
    parser = training_parser("Domain adaptation with weak labels (ECCV 2020), GTA5 or SYNTHIA -> Cityscapes, or between your own domains.", dict(
        num_steps_stop=120000, save_pred_every=1000, keep_last=3), WEAK_LABELS, DEFAULT_RECIPE)
    p = parser.add_argument
    p("--use-weak", action="store_true", help="the weak (image-level) label loss on the target")
    p("--use-weak-cw", action="store_true", help="category-wise feature alignment (its discriminator: 159.5M parameters)")
    p("--use-pseudo", action="store_true", help="pseudo-weak labels from the network's own prediction (unsupervised)")
    p("--pweak-th", type=float, default=0.2, help="a class is pseudo-present above this image-level probability")
    p("--use-pointloss", action="store_true", help="one labelled point per class in each target image")
    p("--point-loss-all-images", action="store_true",
      help="the point loss over the whole batch (the reference uses the first image only)")
    p("--use-pixeladapt", action="store_true", help="add each source image's CycleGAN translation, with its label")
    p("--pixeladapt-dir", default=None,
      help="root of the translated source images, laid out as the source (images/ or RGB/); default: the "
           "reference's {}".format(", ".join("{} for {}".format(d, s) for s, d in PIXELADAPT_DIRS.items())))
    p("--lambda-weak-target2", type=float, default=None,
      help="weight of the weak label loss (the reference's scripts: 0.01 in every mode; its notes suggest 0.2 "
           "with ground-truth labels)" + RECIPE_DEFAULT)
    p("--lambda-weak-cwadv2", type=float, default=None,
      help="weight of the category-wise adversarial loss" + RECIPE_DEFAULT)
    p("--lambda-adv-target2", type=float, default=None,
      help="weight of the output-space adversarial loss" + RECIPE_DEFAULT)
    p("--ls-gan", action="store_true", help="least-squares GAN losses (the reference's sigmoid variant)")
    p("--source-only", action="store_true", help="train on the source alone (no target, no discriminators)")
    p("--weak-dropout", type=float, default=0.1,
      help="dropout on the target logits before the weak loss (the reference's hard-coded 0.1; 0: none)")
    p("--weak-label-file", default=None,
      help="image-level labels of the target images: a line per image, its entry and the classes present")
    p("--source-thresholds", default=None, help="JSON of python -m dataset.weak_labels thresholds for the source")
    p("--target-thresholds", default=None, help="JSON of python -m dataset.weak_labels thresholds for the target")
    p("--restore-from-D2", default=None, help="initial weights of the output-space discriminator")
    p("--restore-from-cwD", default=None, help="initial weights of the category-wise discriminator")
    args = parser.parse_args(argv)
    if args.source_only and (args.use_weak or args.use_weak_cw or args.use_pointloss or args.use_pseudo):
        parser.error("--source-only trains on the source alone: drop --use-weak, --use-weak-cw, --use-pseudo and "
                     "--use-pointloss, or --source-only")
    if not 0 <= args.weak_dropout < 1:
        parser.error("--weak-dropout must be in [0, 1), got {}".format(args.weak_dropout))
    if args.pixeladapt_dir and not args.use_pixeladapt:
        parser.error("--pixeladapt-dir needs --use-pixeladapt")
    if args.weak_label_file and args.use_pseudo:
        parser.error("--weak-label-file gives ground-truth image labels; --use-pseudo predicts them: choose one")
    return check_arguments(parser, args, WEAK_LABELS, DEFAULT_RECIPE)


def main(argv=None):
    return run_training(get_arguments(argv), WeakLabels)


if __name__ == "__main__":
    sys.exit(command_line(main))
