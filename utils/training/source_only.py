"""The source-only baseline of the paper's tables (ResNet-101: 36.6 mIoU): the segmentation
network trained on the labelled source alone with AdaptSegNet's segmentation losses on both heads,
no target image and no discriminator. What adaptation gains is measured against it.

    python train_gta2cityscapes_multi.py --source-only --restore-from DeepLab_resnet_pretrained_init-f81d91e8.pth \\
        --snapshot-dir snapshots/GTA5_source_only --random-mirror --continue-train

Unlike --lambda-adv-target1 0 --lambda-adv-target2 0, it reads no target image: with --bn train
those would move BN's running statistics toward the target (an adaptation of its own).

It is also the smallest example of a method: one file on the shared session.
"""
import paddle

from dataset.sources import make_source
from model import build_model
from utils.loss import seg_loss
from utils.training.method import Method, average_losses, check_finite, upsample
from utils.training.optimizer import build_sgd, describe, set_learning_rates
from utils.training.recipes import ADAPTSEGNET

LOSS_NAMES = ("seg1", "seg2")


class SourceOnly(Method):
    recipes = ADAPTSEGNET
    invariants = ("lambda_seg", "source_only")

    def __init__(self, args):
        super().__init__(args)
        self.source = make_source(args)
        paddle.seed(args.random_seed)
        self.model = build_model(args.model, num_classes=args.num_classes, bn=args.bn)
        self.model.train()
        self.sgd = build_sgd(self.model, args)
        self.nets["model"], self.state["model"] = self.model, self.sgd

    def describe(self):
        return ["source only: the segmentation network on the source alone (the paper's baseline)",
                describe(self.sgd, self.args.sgd_groups)]

    def iteration(self, batches, iteration, parallel):
        args, amp = self.args, self.amp
        rate = set_learning_rates([self.sgd], iteration, args)["lr/G"]
        per_batch = []
        for source_batch, _ in batches:
            images, labels = source_batch[:2]
            out1, out2 = (upsample(out, args.input_size) for out in amp.forward(self.model, images))
            loss_seg1 = seg_loss(out1, labels, args.ignore_label)
            loss_seg2 = seg_loss(out2, labels, args.ignore_label)
            amp.backward((loss_seg2 + args.lambda_seg * loss_seg1) / args.iter_size)
            per_batch.append({"seg1": loss_seg1, "seg2": loss_seg2})
        losses = average_losses(per_batch, LOSS_NAMES)
        if parallel is not None:
            losses = parallel.average_values(losses)
            parallel.average_gradients([self.model])
        check_finite(losses, iteration, amp)
        amp.step([self.sgd], self.model.parameters())
        return losses, dict({"lr/G": rate}, **amp.scalars())
