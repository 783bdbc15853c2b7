"""A training method as the session (utils/training/session.py) runs it, and the helpers its
iteration is written with.

A method is a subclass of ``Method``: the class names its recipes and the flags a continued run
must keep; ``__init__(args)`` builds its datasets, networks and optimizers; ``iteration`` does one
iteration. The session does everything else (resuming, loaders, logging, snapshots, validation),
so a new method is one file: see utils/training/source_only.py for the smallest.
"""
import numpy as np
import paddle
import paddle.nn.functional as F

from utils.files.checkpoint import PaddleOptimizerState
from utils.files.snapshots import SEGMENTATION
from utils.files.download import restore_checks, weights_file
from utils.files.weights import CLASSIFIER_PREFIXES, WeightsError, load_weights
from utils.training.amp import MixedPrecision


class Method(object):
    """What the session needs of a method.

    Class attributes: ``recipes`` ({name: Recipe}, utils/training/recipes.py); ``invariants``, its
    own flags a continued run must keep (the recipe's values are kept anyway); ``weight_flags``, its
    flags naming files of initial weights, which a continued run does not use.

    Set by ``__init__``: ``source`` and ``target`` (datasets; ``target`` None when the method
    reads no target images), ``nets`` ({"model": G, <part>: network}; the parts name the
    snapshot's other files), ``state`` ({name: object with ``state_dict()`` and
    ``set_state_dict(state, source)``}: optimizers, the loss scale), ``amp``.
    """

    recipes = None
    invariants = ()
    weight_flags = ("restore_from",)

    def __init__(self, args):
        self.args = args
        self.source = self.target = None
        self.nets, self.state = {}, {}
        self.amp = MixedPrecision(args.amp)
        if self.amp.mode == "fp16":
            self.state["amp"] = self.amp  # the loss scale

    @property
    def parts(self):
        return tuple(name for name in self.nets if name != SEGMENTATION)

    def describe(self):
        """Lines for the log when the run starts."""
        return []

    def load_initial_weights(self, log):
        """Load what ``weight_flags`` name into a new run's networks, strictly; ``log(line)``
        says what was loaded."""
        self.load_segmentation_weights(log)

    def preflight(self, use_gpu, gpu_id, world_size):
        """Checks before iteration 1 that only the method can make (the card's memory, say); none
        by default."""

    def iteration(self, batches, iteration, parallel):
        """One iteration on ``batches`` (--iter-size pairs of source batch, target batch or None);
        returns ({loss name: value}, {tag: value} of the other numbers to log, e.g. "lr/G")."""
        raise NotImplementedError

    # -- for subclasses ------------------------------------------------------------------------

    def load_segmentation_weights(self, log):
        """--restore-from (or --from-scratch) into G. A file may lack the classifiers (the
        ImageNet/COCO init file: they start fresh, as in the reference), but not one of the two."""
        model, path = self.nets[SEGMENTATION], self.args.restore_from
        if path is None:
            log("--from-scratch: the segmentation network starts from random initialisation")
            return
        path = weights_file(path, log=log, **restore_checks(self.args))
        report = load_weights(model, path, allow_fresh=CLASSIFIER_PREFIXES, check_hash=not self.args.no_hash_check)
        if report.fresh and report.kind != "init" and set(report.fresh) != set(CLASSIFIER_PREFIXES):
            raise WeightsError("{}: has one classifier but not the other ({} missing)".format(
                path, ", ".join(report.fresh)))
        log(report.summary())

    def load_part_weights(self, flags, log):
        """{part: flag}: load each given file into its network, strictly."""
        for part, flag in flags.items():
            path = getattr(self.args, flag)
            if path is None:
                continue
            path = weights_file(path, hash_check=not self.args.no_hash_check, log=log)
            if part not in self.nets:
                raise WeightsError("--{} {}: this mode has no such network".format(flag.replace("_", "-"), path))
            log(load_weights(self.nets[part], path, check_hash=not self.args.no_hash_check).summary())

    def add_discriminators(self, discriminators):
        """{part: network}: each with its own Adam (--learning-rate-D, betas 0.9/0.99, as the
        reference), its state kept in snapshots. Returns the optimizers in that order."""
        optimizers = []
        for name, net in discriminators.items():
            optimizer = paddle.optimizer.Adam(learning_rate=self.args.learning_rate_D, beta1=0.9, beta2=0.99,
                                              parameters=net.parameters())
            self.nets[name] = net
            self.state[name] = PaddleOptimizerState(optimizer, net)
            optimizers.append(optimizer)
        return optimizers


class TrainingDiverged(RuntimeError):
    pass


def upsample(logits, size):
    """Bilinear with align_corners=True to ``size`` = (width, height), as the reference."""
    return F.interpolate(logits, size=[size[1], size[0]], mode="bilinear", align_corners=True)


def set_trainable(nets, trainable):
    """Freeze (or unfreeze) networks: a frozen discriminator passes gradients on to its input only."""
    for net in nets:
        for p in net.parameters():
            p.stop_gradient = not trainable


def average_losses(per_batch, names):
    """The losses of --iter-size sub-batches ({name: tensor or 0.0} each), averaged and read back
    from the device at once: {name: float}."""
    totals = []
    for name in names:
        values = [losses[name] for losses in per_batch if isinstance(losses.get(name), paddle.Tensor)]
        totals.append(paddle.add_n([v.detach().astype("float32").reshape([]) for v in values])
                      if values else paddle.zeros([], "float32"))
    read = paddle.stack(totals).numpy().astype(np.float64) / len(per_batch)
    return dict(zip(names, (float(v) for v in read)))


def check_finite(losses, iteration, amp=None):
    """Stop a run whose losses are not finite. With an fp16 loss scale, an overflow only skips the
    step (and halves the scale); a scale that collapsed below 1 means it keeps overflowing."""
    bad = [name for name, value in losses.items() if not np.isfinite(value)]
    if bad and amp is not None and amp.mode == "fp16" and amp.scale >= 1.0:
        return
    if bad:
        raise TrainingDiverged("iteration {}: loss {} is not finite; the snapshots written so far are intact. "
                               "Lower --learning-rate or resume from an earlier snapshot.".format(
                                   iteration + 1, ", ".join("{}={}".format(n, losses[n]) for n in bad)))
