"""The losses of AdaptSegNet (segmentation cross-entropy and the adversarial losses), of ADVENT (entropy and
self-information) and of the weak-label follow-up (image-level, category-wise adversarial and point losses)."""
import math
import zlib

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle.base import core

from dataset.classes import IGNORE_LABEL

# Discriminator targets: the reference labels source outputs 0 and target outputs 1.
SOURCE_LABEL = 0.0
TARGET_LABEL = 1.0
GAN_KINDS = ("Vanilla", "LS")


def seg_loss(logits, labels, ignore_label=IGNORE_LABEL):
    """Cross-entropy averaged over the pixels whose label is not ``ignore_label``.

    logits: N x C x H x W, labels: N x H x W integers (the datasets' uint8, cast here on the device:
    8x less to carry from the loaders than int64). A batch without a labelled pixel gives 0 (the
    reference returns zeros there), not NaN.
    """
    if labels.dtype != paddle.int64:
        labels = labels.astype("int64")
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


# -- ADVENT (Vu et al., CVPR 2019) ----------------------------------------------------------------

# Added inside the log so that a probability of exactly 0 contributes 0 (0 * log2(1e-30)), not NaN.
ENTROPY_EPS = 1e-30


def self_information(prob):
    """ADVENT's weighted self-information map, what its discriminators see: -p log2(p + 1e-30) / log2(C)
    per class of a softmax ``prob`` (N, C, H, W). Summed over the classes it is the entropy normalised to
    [0, 1]."""
    return -prob * paddle.log2(prob + ENTROPY_EPS) / math.log2(prob.shape[1])


def entropy_loss(prob):
    """ADVENT's MinEnt loss: -sum p log2(p + 1e-30) / (n h w log2 C) of a softmax ``prob`` (N, C, H, W),
    the normalised entropy averaged over pixels."""
    return self_information(prob).sum(axis=1).mean()


# -- the weak-label method (Paul et al., ECCV 2020) ----------------------------------------------

PROBABILITY_EPS = 1e-7


def image_level_prediction(logits):
    """(B, C) probability that each class is in the image, from (B, C, h, w) logits: the sigmoid
    of a smooth maximum over positions, log(mean(exp(logits))), clamped away from 0 and 1."""
    batch, classes = logits.shape[:2]
    flat = logits.reshape([batch, classes, -1])
    smooth_max = paddle.logsumexp(flat, axis=2) - math.log(flat.shape[2])
    return paddle.clip(F.sigmoid(smooth_max), PROBABILITY_EPS, 1 - PROBABILITY_EPS)


def pseudo_weak_labels(logits, threshold):
    """(B, C) 1/0: the classes the network itself says are present (unsupervised adaptation)."""
    return (image_level_prediction(logits.detach()) > threshold).astype("float32")


def weak_loss(logits, weak_labels):
    """Binary cross-entropy between the image-level prediction and the weak labels, averaged over
    images and classes."""
    p = image_level_prediction(logits)
    return -paddle.mean(weak_labels * paddle.log(p) + (1 - weak_labels) * paddle.log(1 - p))


def domain_loss(d_out, domain, ls_gan=False):
    """A discriminator's loss against a domain (SOURCE_LABEL or TARGET_LABEL), as the weak-label
    reference computes it: BCE with logits; or, with --ls-gan, half the squared distance of the
    clamped sigmoid to 1 for the source and 0 for the target (not AdaptSegNet's LS-GAN)."""
    if not ls_gan:
        return F.binary_cross_entropy_with_logits(d_out, paddle.full_like(d_out, domain))
    p = paddle.clip(F.sigmoid(d_out), PROBABILITY_EPS, 1 - PROBABILITY_EPS)
    return 0.5 * paddle.mean((p - (1.0 - domain)) ** 2)


def category_adversarial_loss(cw_out, present, domain, ls_gan=False):
    """The category-wise discriminator's loss: per image, over the classes present in it only;
    averaged over those classes, then over the images that have at least one. A batch where no
    image has a class present gives 0 (with zero gradients), not NaN.

    ``cw_out``: (B, C) logits; ``present``: (B, C) 1/0.
    """
    if ls_gan:
        p = paddle.clip(F.sigmoid(cw_out), PROBABILITY_EPS, 1 - PROBABILITY_EPS)
        per_class = 0.5 * (p - (1.0 - domain)) ** 2
    else:
        per_class = F.binary_cross_entropy_with_logits(cw_out, paddle.full_like(cw_out, domain), reduction="none")
    classes = present.sum(axis=1)
    per_image = (per_class * present).sum(axis=1) / paddle.clip(classes, min=1.0)
    images = (classes > 0).astype(per_image.dtype)
    return (per_image * images).sum() / paddle.clip(images.sum(), min=1.0)


def point_loss(logits, points, weak_labels, images=1):
    """Cross-entropy at the clicked points: -log softmax(logits)[c] at image b's point of class c,
    for the points whose class is in b's weak labels, averaged; 0 without any. All on the device.

    ``logits``: (B, C, H, W) at the points' resolution; ``points``: (B, C, 2) int (row, column),
    -1 for no point; ``images``: how many images of the batch count (the reference: the first).
    """
    batch, classes, height, width = logits.shape
    points = paddle.to_tensor(points) if isinstance(points, np.ndarray) else points
    weak_labels = paddle.to_tensor(weak_labels) if isinstance(weak_labels, np.ndarray) else weak_labels
    rows, columns = points[:, :, 0].astype("int64"), points[:, :, 1].astype("int64")
    at = paddle.clip(rows, min=0) * width + paddle.clip(columns, min=0)  # (B, C): each class's point, flat
    # The logits at every class's point, (B, C classes, C points), then log softmax over the classes.
    at_points = paddle.take_along_axis(logits.reshape([batch, classes, height * width]),
                                       at.unsqueeze(1).expand([batch, classes, classes]), axis=2)
    own = paddle.diagonal(F.log_softmax(at_points, axis=1), axis1=1, axis2=2)  # (B, C): its own class's score
    counted = paddle.arange(batch).unsqueeze(1) < images
    picked = ((rows >= 0) & (weak_labels > 0) & counted).astype(logits.dtype)
    return -(own * picked).sum() / paddle.clip(picked.sum(), min=1.0)


def dropout(x, rate, seed):
    """Dropout (training mode) whose mask is a function of ``seed`` (a sequence of integers), so a
    resumed run draws the masks an uninterrupted one did; ``rate`` 0 returns ``x``. The mask is
    drawn on the device (no copy from the host), and Paddle's generator is left as it was."""
    if rate <= 0:
        return x
    device, cpu = paddle.get_rng_state(), core.default_cpu_generator().get_state()
    paddle.seed(zlib.crc32(np.asarray(seed, dtype=np.int64).tobytes()))  # seeds every device's generator
    keep = paddle.rand(x.shape) >= rate
    paddle.set_rng_state(device)
    core.default_cpu_generator().set_state(cpu)
    return x * (keep.astype(x.dtype) * (1.0 / (1.0 - rate)))
