"""The losses of AdaptSegNet: segmentation cross-entropy and the two adversarial losses."""
import paddle
import paddle.nn.functional as F

from dataset.classes import IGNORE_LABEL

# Discriminator targets: the reference labels source outputs 0 and target outputs 1.
SOURCE_LABEL = 0.0
TARGET_LABEL = 1.0
GAN_KINDS = ("Vanilla", "LS")


def seg_loss(logits, labels, ignore_label=IGNORE_LABEL):
    """Cross-entropy averaged over the pixels whose label is not ``ignore_label``.

    logits: N x C x H x W, labels: N x H x W int64. A batch without a labelled pixel gives 0
    (the reference returns zeros there), not NaN.
    """
    per_pixel = F.cross_entropy(logits, labels.unsqueeze(1), ignore_index=ignore_label,
                                reduction="none", axis=1)
    valid = (labels != ignore_label).astype(per_pixel.dtype).sum()
    return per_pixel.sum() / paddle.clip(valid, min=1.0)


def adv_loss(d_out, label, gan="Vanilla"):
    """Discriminator loss against a constant label: BCE with logits, or least squares (``LS``)."""
    target = paddle.full_like(d_out, label)
    if gan == "Vanilla":
        return F.binary_cross_entropy_with_logits(d_out, target)
    if gan == "LS":
        return F.mse_loss(d_out, target)
    raise ValueError("unknown --gan {!r}: choose one of {}".format(gan, ", ".join(GAN_KINDS)))
