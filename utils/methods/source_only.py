"""The source-only baseline of the paper's tables (ResNet-101: 36.6 mIoU): the segmentation
network trained on the labelled source alone with AdaptSegNet's segmentation losses on both heads,
no target image and no discriminator. What adaptation gains is measured against it.

    python train_gta2cityscapes_multi.py --source-only --restore-from DeepLab_resnet_pretrained_init-f81d91e8.pth \\
        --snapshot-dir snapshots/GTA5_source_only --random-mirror --continue-train

Unlike --lambda-adv-target1 0 --lambda-adv-target2 0, it reads no target image: with --bn train
those would move BN's running statistics toward the target (an adaptation of its own).

It is also the smallest method: a step, and the hyper-parameters it uses.
"""
import paddle

from dataset.sources import make_source
from model import build_model
from utils.loss import seg_loss
from utils.methods.adaptsegnet import AdaptSegNet
from utils.training.method import Method, upsample
from utils.training.optimizer import build_sgd, describe


class SourceOnly(Method):
    description = AdaptSegNet.description
    recipes, default_recipe = AdaptSegNet.recipes, AdaptSegNet.default_recipe
    params = [p for p in AdaptSegNet.params if p.name in ("lambda_seg", "source_only")]
    loss_names = ("seg1", "seg2")

    def __init__(self, settings):
        super().__init__(settings)
        self.source = make_source(settings)
        paddle.seed(settings.random_seed)
        model = build_model(settings.model, num_classes=settings.num_classes, bn=settings.bn)
        model.train()
        self.nets["model"] = model
        self.state["model"] = sgd = build_sgd(model, settings)
        self.optimizers.append(sgd)

    def describe(self):
        return ["source only: the segmentation network on the source alone (the paper's baseline)",
                describe(self.optimizers[0], self.args.sgd_groups)]

    def step(self, source, target, scale, seed):
        args = self.args
        out1, out2 = (upsample(out, args.input_size) for out in self.amp.forward(self.nets["model"], source.images))
        loss_seg1 = seg_loss(out1, source.labels, args.ignore_label)
        loss_seg2 = seg_loss(out2, source.labels, args.ignore_label)
        self.amp.backward((loss_seg2 + args.lambda_seg * loss_seg1) * scale)
        return {"seg1": loss_seg1, "seg2": loss_seg2}
