"""What a training run looks like: its logged losses and its latest picture."""
import collections
import glob
import os
import re

import numpy as np

from utils.training.log import METRICS_FILE, PICTURES_DIR, read_metrics as _read_metrics


def read_metrics(snapshot_dir):
    """The run's metrics.jsonl as {tag: (steps, values)}, tags in the order first logged."""
    metrics = _read_metrics(snapshot_dir)
    if not metrics:
        raise ValueError("{} holds no logged step yet; the first line comes after --log-every iterations".format(
            os.path.join(snapshot_dir, METRICS_FILE)))
    return metrics


def _trailing_mean(values, window):
    values = np.asarray(values, dtype=np.float64)
    sums = np.cumsum(np.insert(values, 0, 0.0))
    starts = np.maximum(np.arange(1, len(values) + 1) - window, 0)
    return (sums[1:] - sums[starts]) / (np.arange(1, len(values) + 1) - starts)


def latest_picture(snapshot_dir):
    """The newest ``predictions/iter_<N>.png`` of the run (a target image and its prediction), or None."""
    pictures = {}
    for path in glob.glob(os.path.join(snapshot_dir, PICTURES_DIR, "iter_*.png")):
        match = re.match(r"^iter_(\d+)\.png$", os.path.basename(path))
        if match:
            pictures[int(match.group(1))] = path
    return pictures[max(pictures)] if pictures else None


# Panel title -> (tag, legend) of each line it draws. AdaptSegNet's heads: 1 on conv4 features, 2 on conv5.
ADAPTSEGNET_PANELS = collections.OrderedDict([
    ("segmentation loss (GTA5)", (("loss/seg1", "seg1 (conv4 head)"), ("loss/seg2", "seg2 (conv5 head)"))),
    ("adversarial loss (Cityscapes)", (("loss/adv_target1", "adv_target1 (conv4 head)"),
                                       ("loss/adv_target2", "adv_target2 (conv5 head)"))),
    ("discriminator loss", (("loss/D1", "D1 (conv4 head)"), ("loss/D2", "D2 (conv5 head)"))),
    ("learning rate", (("lr/G", "G (segmentation network)"), ("lr/D", "D (discriminators)"))),
])
# train_weak_labels.py: the conv5 head only, plus the weak-label terms.
WEAK_LABEL_PANELS = collections.OrderedDict([
    ("segmentation loss (GTA5)", (("loss/seg2", "seg2"),)),
    ("adversarial losses (Cityscapes)", (("loss/adv_target2", "adv_target2 (output space)"),
                                         ("loss/cw_adv", "cw_adv (category-wise)"))),
    ("discriminator losses", (("loss/D2", "D2 (output space)"), ("loss/cw_D", "cw_D (category-wise)"))),
    ("weak-label losses (Cityscapes)", (("loss/weak", "weak (image-level labels)"),
                                        ("loss/point", "point (one point per class)"))),
    ("classes marked present", (("loss/present", "fraction of the 19 classes"),)),
    ("learning rate", (("lr/G", "G (segmentation network)"), ("lr/D", "D (discriminators)"))),
])


# ADVENT: "main" is the conv5 head, "aux" the conv4 head; a MinEnt run has no adv/d, an AdvEnt run no ent.
ADVENT_PANELS = collections.OrderedDict([
    ("segmentation loss (source)", (("loss/seg_src_aux", "seg_src_aux (conv4 head)"),
                                    ("loss/seg_src_main", "seg_src_main (conv5 head)"))),
    ("entropy (target, MinEnt)", (("loss/ent_trg_aux", "ent_trg_aux (conv4 head)"),
                                  ("loss/ent_trg_main", "ent_trg_main (conv5 head)"))),
    ("adversarial loss (target, AdvEnt)", (("loss/adv_trg_aux", "adv_trg_aux (conv4 head)"),
                                           ("loss/adv_trg_main", "adv_trg_main (conv5 head)"))),
    ("discriminator loss (AdvEnt)", (("loss/d_aux", "d_aux (conv4 head)"), ("loss/d_main", "d_main (conv5 head)"))),
    ("learning rate", (("lr/G", "G (segmentation network)"), ("lr/D", "D (discriminators)"))),
])


def method_panels(metrics):
    """The panels of the method that logged ``metrics``: ADVENT's, the weak-label method's or AdaptSegNet's."""
    if "loss/seg_src_main" in metrics:
        return ADVENT_PANELS
    return WEAK_LABEL_PANELS if "loss/weak" in metrics else ADAPTSEGNET_PANELS


def plot_losses(metrics, path=None, smooth=1, panels=None):
    """The logged losses and learning rates against the iteration, one panel per entry of
    ``panels`` (default: ``method_panels``); ``smooth``: logged points averaged.

    A tag the run did not log is left out; one that stayed 0 is only named in the legend, so that
    it does not squash the others' scale (the weak-label script logs every term, 0 for those its
    mode does not use).
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels = panels or method_panels(metrics)
    panels = collections.OrderedDict((title, lines) for title, lines in panels.items()
                                     if any(tag in metrics for tag, _ in lines))
    columns = 2 if len(panels) <= 4 else 3
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, 3.5 * rows), sharex=True, squeeze=False)
    for ax, (title, lines) in zip(axes.ravel(), panels.items()):
        for tag, legend in lines:
            if tag not in metrics:
                continue
            steps, values = metrics[tag]
            if not np.any(np.asarray(values, dtype=np.float64)):
                ax.plot([], [], linestyle="none", label=legend + ": 0 throughout (not used in this run)")
                continue
            shown = _trailing_mean(values, smooth) if tag.startswith("loss/") else values
            ax.plot(steps, shown, label=legend)
        if ax.lines:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "not logged by this run", ha="center", va="center", transform=ax.transAxes,
                    color="grey")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if smooth > 1:
        figure.suptitle("losses averaged over {} logged points".format(smooth))
    figure.tight_layout()
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        figure.savefig(path, dpi=100)
    return figure
