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
"""
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


class Advent(Method):
    description = ("ADVENT (CVPR 2019): MinEnt and AdvEnt, entropy minimisation on the target, GTA5 or SYNTHIA -> "
                   "Cityscapes or between your own domains.")
    recipes = RECIPES
    default_recipe = "advent"  # the reference's configuration, which reached the paper's numbers
    params = PARAMS
    part_weights = {"D1": "AdvEnt's conv4-head (aux) discriminator", "D2": "AdvEnt's conv5-head (main) discriminator"}
    run_defaults = dict(num_steps_stop=120000, save_pred_every=2000, model=FOUR_BRANCHES)

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
