"""Domain adaptation with weak labels (Paul, Tsai et al., ECCV 2020): AdaptSegNet's network and
output-space discriminator, plus image-level labels on the target domain.

    # UDA: pseudo-weak labels, category-wise alignment, pixel adaptation (48.2 mIoU in the paper)
    python train_weak_labels.py --restore-from gta5_pretrained.pth --snapshot-dir snapshots/pseudoweak \\
        --use-weak --use-pseudo --use-weak-cw --use-pixeladapt --continue-train
    # WDA: image labels from the target's ground truth (53.0), or one point per class (56.4)
    python train_weak_labels.py ... --use-weak --use-weak-cw --use-pixeladapt
    python train_weak_labels.py ... --use-weak --use-pointloss --use-weak-cw --use-pixeladapt

``step`` follows the reference's order; before the optimizers step, G's gradient is clipped to
norm 1, as the reference does (not when training on the source alone).
"""
import paddle
import paddle.nn.functional as F

from dataset.sources import CUSTOM, TranslatedImages, make_source, make_target
from dataset.weak_labels import SourceWithPresentClasses, Thresholds, WeakTargetDataSet
from model import CWDiscriminator, FCDiscriminator, build_model
from model.discriminator import pooled_features
from utils.loss import (SOURCE_LABEL, TARGET_LABEL, category_adversarial_loss, domain_loss, dropout, point_loss,
                        pseudo_weak_labels, seg_loss, weak_loss)
from utils.training.method import Method, MethodError, set_trainable, upsample
from utils.training.optimizer import build_sgd, clip_grad_norm, describe
from utils.training.params import Param, Recipe, same_in

# The reference's hard-coded location of CycleGAN-translated source images.
PIXELADAPT_DIRS = {"gta5": "./data/cycleGAN_output/gta5_deeplab", "synthia": "./data/cycleGAN_output/syn_deeplab"}

# The weak-label reference (sujoyp/weak-da-seg) trains as AdaptSegNet's code does.
RECIPES = [
    Recipe("authors", "the weak-da-seg scripts", "48.2 (UDA), 53.0 (image labels), 56.4 (points) mIoU"),
    Recipe("paddle-port", "the Paddle port's batch, BN and optimizer", "none: the port did not train this method"),
    Recipe("paper", "the papers' text", "none: nobody has published this run"),
]

PARAMS = [
    Param("use_weak", False, "the weak (image-level) label loss on the target", action="store_true"),
    Param("use_weak_cw", False, "category-wise feature alignment (its discriminator: 159.5M parameters)",
          action="store_true"),
    Param("use_pseudo", False, "pseudo-weak labels from the network's own prediction (unsupervised)",
          action="store_true"),
    Param("pweak_th", 0.2, "a class is pseudo-present above this image-level probability", type=float),
    Param("use_pointloss", False, "one labelled point per class in each target image", action="store_true"),
    Param("point_loss_all_images", False, "the point loss over the whole batch (the reference uses the first image "
          "only)", action="store_true"),
    Param("use_pixeladapt", False, "add each source image's CycleGAN translation, with its label", action="store_true"),
    Param("pixeladapt_dir", None, "root of the translated source images, laid out as the source (images/ or RGB/); "
          "default: the reference's {}".format(", ".join("{} for {}".format(d, s) for s, d in PIXELADAPT_DIRS.items())),
          keep=False),
    # The reference's scripts set these loss weights in every mode.
    Param("lambda_weak_target2", same_in(RECIPES, 0.01), "weight of the weak label loss (the reference's scripts: "
          "0.01 in every mode; its notes suggest 0.2 with ground-truth labels)", type=float),
    Param("lambda_weak_cwadv2", same_in(RECIPES, 1e-3), "weight of the category-wise adversarial loss", type=float),
    Param("lambda_adv_target2", same_in(RECIPES, 1e-3), "weight of the output-space adversarial loss", type=float),
    Param("ls_gan", False, "least-squares GAN losses (the reference's sigmoid variant)", action="store_true"),
    Param("source_only", False, "train on the source alone (no target, no discriminators)", earlier=False,
          action="store_true"),
    Param("weak_dropout", 0.1, "dropout on the target logits before the weak loss (the reference's hard-coded 0.1; 0: "
          "none)", type=float),
    Param("weak_label_file", None, "image-level labels of the target images: a line per image, its entry and the "
          "classes present", keep=False),
    Param("source_thresholds", None, "JSON of python -m dataset.weak_labels thresholds for the source", keep=False),
    Param("target_thresholds", None, "JSON of python -m dataset.weak_labels thresholds for the target", keep=False),
]


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
        raise MethodError("--target {}: its training images have no labels; weak supervision needs --use-pseudo "
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

    description = ("Domain adaptation with weak labels (ECCV 2020), GTA5 or SYNTHIA -> Cityscapes, or between your "
                   "own domains.")
    recipes = RECIPES
    default_recipe = "authors"  # the weak-da-seg scripts' configuration (README: Which recipe)
    params = PARAMS
    # What the reference prints, but seg1, adv1 and D1: its conv4 head and D1 are never used.
    loss_names = ("seg2", "adv_target2", "D2", "weak", "cw_adv", "cw_D", "point", "present")
    part_weights = {"D2": "the output-space discriminator", "cwD": "the category-wise discriminator"}
    run_defaults = dict(num_steps_stop=120000, save_pred_every=1000, keep_last=3)

    def __init__(self, settings):
        super().__init__(settings)
        args = settings
        source = make_source(args)
        self.source_thresholds = None
        if args.use_weak_cw:  # the only use of the source's thresholds
            self.source_thresholds = Thresholds.from_file(args.source_thresholds, args.class_set) \
                if args.source_thresholds else Thresholds.of_dataset(source, args.class_set)
        if args.use_pixeladapt:
            if not (args.pixeladapt_dir or args.source in PIXELADAPT_DIRS):
                raise MethodError("--use-pixeladapt with --source {} needs --pixeladapt-dir".format(args.source))
            source = TranslatedImages(source, args.pixeladapt_dir or PIXELADAPT_DIRS[args.source])
        if args.use_weak_cw:  # the classes present in each source image, found by the loader's workers
            source = SourceWithPresentClasses(source, self.source_thresholds)
        self.source, self.target = source, target_dataset(args)
        paddle.seed(args.random_seed)
        model, D2, cwD = self.build_networks(args)
        self.nets["model"] = model
        self.state["model"] = sgd = build_sgd(model, args)
        self.optimizers.append(sgd)
        self.add_discriminators({name: net for name, net in (("D2", D2), ("cwD", cwD)) if net is not None})

    @staticmethod
    def build_networks(args):
        """G, and the discriminators the mode uses (None for the others)."""
        model = build_model(args.model, num_classes=args.num_classes, bn=args.bn)
        D2 = None if args.source_only else FCDiscriminator(num_classes=args.num_classes)
        cwD = CWDiscriminator(num_classes=args.num_classes) if args.use_weak_cw else None
        return model, D2, cwD

    @classmethod
    def check_flags(cls, settings):
        args, problems = settings, []
        if args.source_only and (args.use_weak or args.use_weak_cw or args.use_pointloss or args.use_pseudo):
            problems.append("--source-only trains on the source alone: drop --use-weak, --use-weak-cw, --use-pseudo "
                            "and --use-pointloss, or --source-only")
        if not 0 <= args.weak_dropout < 1:
            problems.append("--weak-dropout must be in [0, 1), got {}".format(args.weak_dropout))
        if args.pixeladapt_dir and not args.use_pixeladapt:
            problems.append("--pixeladapt-dir needs --use-pixeladapt")
        if args.weak_label_file and args.use_pseudo:
            problems.append("--weak-label-file gives ground-truth image labels; --use-pseudo predicts them: choose one")
        return problems

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

    def step(self, source, target, scale, seed):
        """The reference's steps; ``seed`` is that of the weak loss's dropout mask."""
        args, amp = self.args, self.amp
        model, D2, cwD = self.nets["model"], self.nets.get("D2"), self.nets.get("cwD")
        losses = {}
        source_pooled = target_pooled = weak = loss_weak = loss_point = loss_cw_adv = None

        # 1. Source: segmentation loss on the conv5 head (the reference's lambda_seg is 0).
        _, source_out, source_features = amp.forward(model, source.images, return_features=True)
        if cwD is not None:
            source_pooled = pooled_features(source_out.detach(), source_features.detach())
        source_out = upsample(source_out, args.input_size)
        loss_seg = seg_loss(source_out, source.labels, args.ignore_label)
        amp.backward(loss_seg * scale)
        losses["seg2"] = loss_seg
        if args.source_only:
            return losses

        # 2. Target: fool the frozen discriminators; weak-label and point losses.
        set_trainable([net for net in (D2, cwD) if net is not None], False)
        _, target_out, target_features = amp.forward(model, target.images, return_features=True)
        if needs_weak_labels(args):
            weak = pseudo_weak_labels(target_out, args.pweak_th) if args.use_pseudo else target.weak
        if args.use_pointloss:
            loss_point = point_loss(upsample(target_out, args.input_size_target), target.points, weak,
                                    images=len(target.images) if args.point_loss_all_images else 1)
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
        for out, pooled, domain, present in ((source_out, source_pooled, SOURCE_LABEL, source.present),
                                             (target_out, target_pooled, TARGET_LABEL, weak)):
            half_D2 = domain_loss(amp.forward(D2, F.softmax(out.detach(), axis=1)), domain, args.ls_gan) / 2
            amp.backward(half_D2 * scale)
            losses["D2"] = losses.get("D2", 0.0) + half_D2.detach()
            if cwD is not None:
                half_cw = category_adversarial_loss(amp.forward(cwD, pooled.detach()), present, domain, args.ls_gan) / 2
                amp.backward(half_cw * scale)
                losses["cw_D"] = losses.get("cw_D", 0.0) + half_cw.detach()
        return losses

    def before_optimizer_step(self):
        if not self.args.source_only:
            clip_grad_norm(self.nets["model"].parameters(), 1.0)
