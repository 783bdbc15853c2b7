"""AdaptSegNet, multi-level: adversarial adaptation in the output space, GTA5 -> Cityscapes.

    python train_gta2cityscapes_multi.py --restore-from DeepLab_resnet_pretrained_init-f81d91e8.pth \
        --snapshot-dir snapshots/GTA2Cityscapes_multi --random-mirror
    python train_gta2cityscapes_multi.py --snapshot-dir snapshots/GTA2Cityscapes_multi --continue-train

Defaults are the documented schedule. Each iteration does the method's four steps (see
adaptation_step and train_iteration); snapshots are
written every --save-pred-every iterations and a killed run continues exactly where its last
snapshot left it.
"""
import utils.runtime  # noqa: F401  (first: settings that must precede paddle)

import math
import os
import random
import sys
import time

import numpy as np
import paddle
import paddle.nn.functional as F
from tqdm import tqdm

from dataset import GTA5DataSet, cityscapesDataSet
from dataset.classes import IMG_MEAN_BGR, colorize
from dataset.sampler import SOURCE_STREAM, TARGET_STREAM, ResumableBatchSampler
from model import FCDiscriminator, build_model
from utils.checkpoint import Checkpointer, CheckpointError, ensure_room_for_snapshots
from utils.distributed import Parallel
from utils.loss import SOURCE_LABEL, TARGET_LABEL, adv_loss, seg_loss
from utils.runtime import select_device
from utils.train_log import TrainLog
from utils.train_options import get_arguments
from utils.weights import CLASSIFIER_PREFIXES, WeightsError, load_weights

LOSS_NAMES = ("seg1", "seg2", "adv_target1", "adv_target2", "D1", "D2")
# Flags a resumed run must share with the snapshot for the continuation to be exact.
RESUME_INVARIANTS = ("batch_size", "iter_size", "random_seed", "random_mirror", "num_steps", "power",
                     "learning_rate", "learning_rate_D", "momentum", "weight_decay", "lambda_seg",
                     "lambda_adv_target1", "lambda_adv_target2", "gan", "input_size", "input_size_target", "set")


class TrainingDiverged(RuntimeError):
    pass


def lr_poly(base_lr, iteration, num_steps, power):
    return base_lr * (1 - float(iteration) / num_steps) ** power


def upsample(logits, size):
    """Bilinear with align_corners=True to ``size`` = (width, height), as the reference."""
    return F.interpolate(logits, size=[size[1], size[0]], mode="bilinear", align_corners=True)


def set_trainable(nets, trainable):
    for net in nets:
        for p in net.parameters():
            p.stop_gradient = not trainable


def adaptation_step(model, D1, D2, source_batch, target_batch, args, scale=1.0):
    """Steps 1-3 of an iteration on one (sub-)batch; gradients accumulate, nothing is stepped."""
    source_images, source_labels = source_batch
    target_images = target_batch[0]

    # 1. Supervised segmentation on the source domain, both heads.
    source_out1, source_out2 = (upsample(out, args.input_size) for out in model(source_images))
    loss_seg1 = seg_loss(source_out1, source_labels, args.ignore_label)
    loss_seg2 = seg_loss(source_out2, source_labels, args.ignore_label)
    ((loss_seg2 + args.lambda_seg * loss_seg1) * scale).backward()

    # 2. Make target outputs look like source outputs to the frozen discriminators.
    set_trainable([D1, D2], False)
    target_out1, target_out2 = (upsample(out, args.input_size_target) for out in model(target_images))
    loss_adv_target1 = adv_loss(D1(F.softmax(target_out1, axis=1)), SOURCE_LABEL, args.gan)
    loss_adv_target2 = adv_loss(D2(F.softmax(target_out2, axis=1)), SOURCE_LABEL, args.gan)
    ((args.lambda_adv_target1 * loss_adv_target1 + args.lambda_adv_target2 * loss_adv_target2) * scale).backward()
    set_trainable([D1, D2], True)

    # 3. Train the discriminators to tell source (0) from target (1), each half weighted 1/2.
    loss_D1 = loss_D2 = 0.0
    for (out1, out2), label in (((source_out1, source_out2), SOURCE_LABEL),
                                ((target_out1, target_out2), TARGET_LABEL)):
        half_D1 = adv_loss(D1(F.softmax(out1.detach(), axis=1)), label, args.gan) / 2
        half_D2 = adv_loss(D2(F.softmax(out2.detach(), axis=1)), label, args.gan) / 2
        (half_D1 * scale).backward()
        (half_D2 * scale).backward()
        loss_D1 += float(half_D1)
        loss_D2 += float(half_D2)

    losses = (loss_seg1, loss_seg2, loss_adv_target1, loss_adv_target2, loss_D1, loss_D2)
    return {name: float(value) * scale for name, value in zip(LOSS_NAMES, losses)}


def train_iteration(nets, optimizers, batches, iteration, args, parallel=None):
    """One iteration: steps 1-3 over --iter-size sub-batches, then step 4 for all three optimizers.

    With ``parallel`` (a distributed job), gradients and logged losses are averaged over the
    ranks before the optimizers step, so every rank takes the same step.
    """
    model, D1, D2 = nets
    optimizer, optimizer_D1, optimizer_D2 = optimizers
    lr = lr_poly(args.learning_rate, iteration, args.num_steps, args.power)
    lr_D = lr_poly(args.learning_rate_D, iteration, args.num_steps, args.power)
    optimizer.set_lr(lr)  # the classifier group's 10x is a per-group multiplier
    optimizer_D1.set_lr(lr_D)
    optimizer_D2.set_lr(lr_D)

    losses = dict.fromkeys(LOSS_NAMES, 0.0)
    for source_batch, target_batch in batches:
        for name, value in adaptation_step(model, D1, D2, source_batch, target_batch, args,
                                           scale=1.0 / args.iter_size).items():
            losses[name] += value
    if parallel is not None:
        losses = parallel.average_values(losses)
        parallel.average_gradients(nets)
    bad = [name for name, value in losses.items() if not math.isfinite(value)]
    if bad:
        raise TrainingDiverged("iteration {}: loss {} is not finite; the snapshots written so far are intact. "
                               "Lower --learning-rate or resume from an earlier snapshot.".format(
                                   iteration + 1, ", ".join("{}={}".format(n, losses[n]) for n in bad)))

    # 4. Step the segmentation network and both discriminators.
    for opt in optimizers:
        opt.step()
        opt.clear_grad()
    return losses, lr, lr_D


def build_networks(args):
    paddle.seed(args.random_seed)
    np.random.seed(args.random_seed)
    random.seed(args.random_seed)
    model = build_model(args.model, num_classes=args.num_classes)
    D1 = FCDiscriminator(num_classes=args.num_classes)
    D2 = FCDiscriminator(num_classes=args.num_classes)
    for net in (model, D1, D2):
        net.train()
    optimizer = paddle.optimizer.Momentum(learning_rate=args.learning_rate, momentum=args.momentum,
                                          parameters=model.parameter_groups(), weight_decay=args.weight_decay)
    optimizers_D = [paddle.optimizer.Adam(learning_rate=args.learning_rate_D, beta1=0.9, beta2=0.99,
                                          parameters=D.parameters()) for D in (D1, D2)]
    return (model, D1, D2), (optimizer,) + tuple(optimizers_D)


def restore_initial_weights(nets, args, log):
    """--restore-from (and -D1/-D2): the networks' starting weights, loaded strictly.

    The init file holds a backbone only: its classifiers start fresh, as in the reference. A
    complete state dict (a released model, a PyTorch run's snapshot) loads every key.
    """
    model, D1, D2 = nets
    if args.restore_from is None:
        log("--from-scratch: the segmentation network starts from random initialisation")
    else:
        report = load_weights(model, args.restore_from, allow_fresh=CLASSIFIER_PREFIXES)
        if report.fresh and report.kind != "init" and set(report.fresh) != set(CLASSIFIER_PREFIXES):
            raise WeightsError("{}: has one classifier but not the other ({} missing)".format(
                args.restore_from, ", ".join(report.fresh)))
        log(report.summary())
    for D, path in ((D1, args.restore_from_D1), (D2, args.restore_from_D2)):
        if path is not None:
            log(load_weights(D, path).summary())


def data_loader(dataset, args, stream, start_iter, parallel):
    sampler = ResumableBatchSampler(len(dataset), args.batch_size, args.random_seed, stream, args.random_mirror,
                                    start_batch=start_iter * args.iter_size,
                                    num_batches=(args.num_steps_stop - start_iter) * args.iter_size,
                                    rank=parallel.rank, num_replicas=parallel.world_size)
    return paddle.io.DataLoader(dataset, batch_sampler=sampler, num_workers=args.num_workers,
                                collate_fn=stack_images_and_labels)


def stack_images_and_labels(samples):
    """Batch the first two fields of the samples: images and labels (source) or sizes (target)."""
    images, second = list(zip(*samples))[:2]
    return np.stack(images), np.stack(second)


def prediction_picture(model, target_images):
    """The first target image next to its colourised prediction (conv5 head)."""
    with paddle.no_grad():
        logits = model(target_images[:1])[1]
    size = target_images.shape[2:]
    labels = paddle.argmax(F.interpolate(logits, size=size, mode="bilinear", align_corners=True), axis=1)
    image = (target_images[0].numpy().transpose(1, 2, 0) + IMG_MEAN_BGR)[:, :, ::-1]
    return np.concatenate([np.clip(image, 0, 255).astype(np.uint8), colorize(labels[0].numpy())], axis=1)


def run_invariants(args, source, target):
    """What a continued run must share with the snapshot: the flags above and the datasets' sizes
    (the data order is a permutation of each dataset)."""
    invariants = {k: getattr(args, k) for k in RESUME_INVARIANTS}
    invariants.update(source_images=len(source), target_images=len(target))
    return invariants


def check_resumable(saved, current):
    changed = ["--{} {} (snapshot: {})".format(k.replace("_", "-"), current[k], saved.get(k))
               for k in RESUME_INVARIANTS if saved.get(k) != current[k]]
    changed += ["{} {} (snapshot: {})".format(k.replace("_", " "), current[k], saved.get(k))
                for k in ("source_images", "target_images") if saved.get(k) != current[k]]
    if changed:
        raise CheckpointError("cannot continue exactly with changed settings: {}. Use the snapshot's values, or "
                              "start a new run from its weights with --restore-from.".format("; ".join(changed)))


class Run(object):
    """Everything a run needs at its first iteration."""

    def __init__(self, source, target, nets, optimizers, checkpointer, start_iter, messages, parallel):
        self.source, self.target = source, target
        self.nets, self.optimizers = nets, optimizers
        self.checkpointer, self.start_iter, self.messages = checkpointer, start_iter, messages
        self.parallel = parallel


def prepare(args, parallel=None):
    """All checks and loading before iteration 1, so that a bad start fails at once."""
    parallel = parallel or Parallel()
    parallel.per_rank_batch(args.batch_size)
    select_device(args, parallel.gpu_id)
    source = GTA5DataSet(args.data_dir, args.data_list, crop_size=args.input_size, ignore_label=args.ignore_label)
    target = cityscapesDataSet(args.data_dir_target, args.data_list_target, crop_size=args.input_size_target,
                               set=args.set)
    nets, optimizers = build_networks(args)
    model, D1, D2 = nets
    checkpointer = Checkpointer(args.snapshot_dir, {"model": model, "D1": D1, "D2": D2},
                                {"model": (optimizers[0], model), "D1": (optimizers[1], D1),
                                 "D2": (optimizers[2], D2)}, keep_last=args.keep_last)
    messages = []
    if args.continue_train:
        start_iter, extra = checkpointer.resume(args.start_iter)
        parallel.require_same(start_iter, "the iteration to resume from")
        check_resumable(extra["args"], run_invariants(args, source, target))
        messages.append("resumed from {} at iteration {}".format(args.snapshot_dir, start_iter))
        parallel.barrier()  # every rank has read its snapshot before newer files move
        superseded = checkpointer.set_aside_newer(start_iter) if parallel.is_main else None
        if superseded:
            messages.append("newer snapshots of the abandoned continuation moved to {}".format(superseded))
    else:
        if checkpointer.complete_iterations():
            raise CheckpointError("{} already holds snapshots of a run: add --continue-train to resume it, or "
                                  "choose another --snapshot-dir".format(args.snapshot_dir))
        start_iter = 0 if args.start_iter == "latest" else args.start_iter
        if start_iter >= args.num_steps_stop:
            raise CheckpointError("--start-iter {} is not before --num-steps-stop {}".format(
                start_iter, args.num_steps_stop))
        restore_initial_weights(nets, args, messages.append)
        if start_iter:
            messages.append("starting at iteration {} of the schedule with fresh optimizers (momentum and Adam "
                            "moments are not in PyTorch snapshots); learning rates {:.3e} / {:.3e}".format(
                                start_iter, lr_poly(args.learning_rate, start_iter, args.num_steps, args.power),
                                lr_poly(args.learning_rate_D, start_iter, args.num_steps, args.power)))
    if parallel.is_main:
        ensure_room_for_snapshots(args.snapshot_dir, checkpointer.snapshot_bytes())
    if parallel.world_size > 1:
        messages.append("data parallel over {} processes: {} images per domain each".format(
            parallel.world_size, parallel.per_rank_batch(args.batch_size)))
    return Run(source, target, nets, optimizers, checkpointer, start_iter, messages, parallel)


def main(argv=None):
    args = get_arguments(argv)
    run = prepare(args)
    nets, optimizers, checkpointer, start_iter, parallel = (
        run.nets, run.optimizers, run.checkpointer, run.start_iter, run.parallel)
    log = TrainLog(args.snapshot_dir, start_iter) if parallel.is_main else None
    for line in run.messages if log else ():
        log.text(line)
        print(line)
    saved_args = run_invariants(args, run.source, run.target)
    source_iter = iter(data_loader(run.source, args, SOURCE_STREAM, start_iter, parallel))
    target_iter = iter(data_loader(run.target, args, TARGET_STREAM, start_iter, parallel))
    bar = tqdm(range(start_iter, args.num_steps_stop), initial=start_iter, total=args.num_steps_stop,
               desc="training", unit="it", dynamic_ncols=True, disable=not parallel.is_main)
    data_wait = compute = 0.0
    window = 0  # iterations since the last logged line
    deadline = None if args.stop_after_minutes is None else time.time() + 60 * args.stop_after_minutes
    stopped_early = False
    try:
        for iteration in bar:
            tick = time.time()
            batches = [(next(source_iter), next(target_iter)) for _ in range(args.iter_size)]
            data_done = time.time()
            losses, lr, lr_D = train_iteration(nets, optimizers, batches, iteration, args, parallel)
            data_wait += data_done - tick
            compute += time.time() - data_done
            window += 1
            done = iteration + 1
            # Every rank must agree to stop at the same iteration: rank 0's clock decides.
            stopped_early = deadline is not None and parallel.agree(time.time() > deadline)
            if not parallel.is_main:
                if stopped_early:
                    break
                continue
            if done % args.log_every == 0 or done == args.num_steps_stop:
                scalars = {"loss/" + name: value for name, value in losses.items()}
                scalars.update({"lr/G": lr, "lr/D": lr_D, "speed/iter_per_s": window / (data_wait + compute),
                                "speed/data_wait_s": data_wait / window})
                log.scalars(done, scalars)
                log.text("iter {} {} lr={:.3e} lr_D={:.3e}".format(
                    done, " ".join("{}={:.4f}".format(n, v) for n, v in losses.items()), lr, lr_D))
                bar.set_postfix(seg2="{:.3f}".format(losses["seg2"]), D2="{:.3f}".format(losses["D2"]))
                data_wait = compute = 0.0
                window = 0
            if args.picture_every and done % args.picture_every == 0:
                log.picture(done, prediction_picture(nets[0], batches[0][1][0]))
            if done % args.save_pred_every == 0 or done == args.num_steps_stop or stopped_early:
                files = checkpointer.save(done, args=saved_args)
                log.text("snapshot {}".format(files["model"]))
            if stopped_early:
                message = "stopped after {} minutes at iteration {}: continue with --continue-train".format(
                    args.stop_after_minutes, done)
                log.text(message)
                print(message)
                break
    finally:
        bar.close()
        if log:
            log.close()
        for loader_iter in (source_iter, target_iter):
            # Worker processes outlive an iterator that was not run to its end; stop them now.
            getattr(loader_iter, "_try_shutdown_all", lambda: None)()
    if parallel.is_main and not stopped_early:
        print("finished: {} iterations; snapshots in {}".format(args.num_steps_stop,
                                                               os.path.abspath(args.snapshot_dir)))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (CheckpointError, WeightsError, TrainingDiverged, FileNotFoundError, ValueError) as exc:
        sys.exit("error: {}".format(exc))
