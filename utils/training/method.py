"""The training method's contract with the engine, and the iteration, written once.

A method is one file in utils/methods/: a subclass of ``Method`` that declares its hyper-parameters
and recipes, builds its datasets, networks and optimizers, and computes its losses on one
sub-batch (``step``). The engine (``Method.run_step`` here, utils/training/session.py around it)
does everything else: the schedule, gradient accumulation, averaging across ranks, the finiteness
check, the optimizer steps, resuming, logging, snapshots, validation and stopping.
"""
import numpy as np
import paddle
import paddle.nn.functional as F

from utils.files.checkpoint import PaddleOptimizerState
from utils.files.snapshots import SEGMENTATION
from utils.files.download import restore_checks, weights_file
from utils.files.weights import CLASSIFIER_PREFIXES, WeightsError, load_weights
from utils.training.amp import MixedPrecision
from utils.training.distributed import Parallel
from utils.training.optimizer import set_learning_rates


class Method(object):
    """What differs between training methods. The engine runs each iteration as::

        set every optimizer's rate on the poly schedule (G's first, then the discriminators')
        for each of --iter-size sub-batches:
            losses = method.step(source, target, scale=1/iter_size, seed)  # gradients accumulate
        average the losses (one read from the device); across ranks with the gradients
        stop when a loss is not finite
        method.before_optimizer_step(); step every optimizer   # (unscaled first with --amp fp16)

    Declared by the class (they make its flags, recipe tables, resume check and log lines):
    ``description``; ``recipes`` ([params.Recipe]) and ``default_recipe``; ``params``
    ([params.Param], the method's own hyper-parameters); ``loss_names`` (what ``step`` returns, in
    the log's order); ``part_weights`` ({part: what it is}: a network besides G whose initial weights
    --restore-from-<part> may name); ``run_defaults`` (other defaults, e.g. num_steps_stop);
    ``read_config`` (path -> {setting: value}: the reference's config files, read by ``--cfg``).

    Set by ``__init__(settings)``: ``source`` and ``target`` (datasets; ``target`` None when the
    method reads no target image), ``nets`` ({"model": G, part: network}, in the order their
    gradients are averaged and stepped), ``optimizers`` (G's first), ``state`` ({name: object with
    ``state_dict()`` and ``set_state_dict(state, source)``}: what else a snapshot keeps), ``amp``.
    """

    description = ""
    recipes = ()
    default_recipe = None
    params = ()
    loss_names = ()
    part_weights = {}
    run_defaults = {}
    read_config = None

    def __init__(self, settings):
        self.args = settings
        self.source = self.target = None
        self.nets, self.state, self.optimizers = {}, {}, []
        self.amp = MixedPrecision(settings.amp)
        if self.amp.mode == "fp16":
            self.state["amp"] = self.amp  # the loss scale

    # -- what a method defines -----------------------------------------------------------------

    @classmethod
    def variant(cls, settings):
        """The class that trains ``settings``: this one, or one its flags select (a baseline)."""
        return cls

    @classmethod
    def check_flags(cls, settings):
        """Problems of the parsed flags that only the method knows (each a line naming a flag)."""
        return []

    @classmethod
    def add_legacy_flags(cls, parser):
        """Flags of the original command line that are accepted and have no effect."""

    def step(self, source, target, scale, seed):
        """Forward and backward on one sub-batch (dataset.loader.Batch ``source``, and ``target`` or
        None): gradients times ``scale`` accumulate, nothing is stepped. ``seed`` seeds the
        sub-batch's random draws (the same on every resume). Returns {loss name: tensor}."""
        raise NotImplementedError

    def before_optimizer_step(self):
        """Runs on the finished gradients before the optimizers step (gradient clipping, say)."""

    def describe(self):
        """Lines for the log when the run starts."""
        return []

    def preflight(self, use_gpu, gpu_id, world_size):
        """Checks before iteration 1 that only the method can make (the card's memory, say)."""

    @classmethod
    def on_networks(cls, settings, nets, optimizers):
        """The method on given networks ({"model": G, part: network}) and optimizers (G's first),
        without datasets: its iteration alone, for tests and benchmarks."""
        method = cls.__new__(cls)
        Method.__init__(method, settings)
        method.nets.update(nets)
        method.optimizers.extend(optimizers)
        return method

    # -- the iteration ---------------------------------------------------------------------------

    def run_step(self, batches, iteration, parallel=None):
        """One iteration on ``batches`` (--iter-size pairs of source batch, target batch or None),
        as one rank of ``parallel`` (default: a single process). Returns ({loss name: float},
        {tag: value} of the other numbers to log, e.g. "lr/G")."""
        args, amp, networks = self.args, self.amp, list(self.nets.values())
        parallel = parallel or Parallel()
        rates = set_learning_rates(self.optimizers, iteration, args)
        per_batch = [self.step(source, target, 1.0 / args.iter_size, (args.random_seed, iteration, sub, parallel.rank))
                     for sub, (source, target) in enumerate(batches)]
        losses = parallel.average_values(average_losses(per_batch, self.loss_names))
        parallel.average_gradients(networks)
        check_finite(losses, iteration, amp)
        amp.step(self.optimizers, [p for net in networks for p in net.parameters()],
                 before_step=self.before_optimizer_step)
        return losses, dict(rates, **amp.scalars())

    @property
    def parts(self):
        return tuple(name for name in self.nets if name != SEGMENTATION)

    @property
    def weight_flags(self):
        """Flags naming files of initial weights, which a continued run does not use."""
        return ("restore_from",) + tuple("restore_from_" + part for part in self.part_weights)

    def load_initial_weights(self, log):
        """--restore-from (or --from-scratch) into G, --restore-from-<part> into the parts, strictly;
        ``log(line)`` says what was loaded."""
        self.load_segmentation_weights(log)
        self.load_part_weights(log)

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

    def load_part_weights(self, log):
        for part in self.part_weights:
            path = getattr(self.args, "restore_from_" + part)
            if path is None:
                continue
            path = weights_file(path, hash_check=not self.args.no_hash_check, log=log)
            if part not in self.nets:
                raise WeightsError("--restore-from-{} {}: this mode has no such network".format(part, path))
            log(load_weights(self.nets[part], path, check_hash=not self.args.no_hash_check).summary())

    def add_discriminators(self, discriminators):
        """{part: network}: each with its own Adam (--learning-rate-D, betas 0.9/0.99, as the
        reference), its state kept in snapshots."""
        for name, net in discriminators.items():
            optimizer = paddle.optimizer.Adam(learning_rate=self.args.learning_rate_D, beta1=0.9, beta2=0.99,
                                              parameters=net.parameters())
            self.nets[name] = net
            self.state[name] = PaddleOptimizerState(optimizer, net)
            self.optimizers.append(optimizer)


class MethodError(ValueError):
    """Settings that the method cannot train with, found while building it (a line naming the flag)."""


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
