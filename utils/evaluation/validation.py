"""--val: a training run scores each snapshot on the target's val set as it writes it.

The same evaluation as evaluate_cityscapes.py, into the same cache beside the snapshot, so a
later evaluation of the snapshot directory evaluates nothing again; the best snapshot is kept.
"""
import contextlib
import gc
import os
import random

import numpy as np
import paddle

from dataset.sources import CUSTOM, target_classes
from model.inference import SegmentationPredictor
from utils.evaluation.cityscapes import evaluate, evaluation_set, evaluation_settings, save_score
from utils.files.atomic import atomic_copy


def release_memory(use_gpu):
    """Give back what an evaluation held: its predictor's copy of the network and, on a GPU, the
    cached blocks of Paddle's allocator (a predictor per snapshot would otherwise hold memory until
    garbage collection, beside a training that needs it)."""
    gc.collect()
    if use_gpu:
        paddle.device.cuda.empty_cache()


def validation_backend(backend, use_gpu):
    """--val-backend auto: Paddle Inference on a CPU (several times faster there); on a GPU the
    dynamic graph, which takes its memory from the training's pool instead of a second one."""
    if backend != "auto":
        return backend
    return "dygraph" if use_gpu else "inference"


@contextlib.contextmanager
def random_state_kept():
    """Whatever runs inside leaves Python's, numpy's and Paddle's generators as it found them."""
    python, numpy, device = random.getstate(), np.random.get_state(), paddle.get_rng_state()
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)
        paddle.set_rng_state(device)


class Validation(object):
    """The segmentation network on the target's val set at every snapshot, scored as
    evaluate_cityscapes.py scores it, into the same cache; the best snapshot is kept."""

    def __init__(self, args, use_gpu, gpu_id, watchdog):
        self.args, self.use_gpu, self.gpu_id, self.watchdog = args, use_gpu, gpu_id, watchdog
        self.backend = validation_backend(args.val_backend, use_gpu)
        labels = target_classes(args.target, args.classes) if args.target == CUSTOM else None
        val = evaluation_set(args.target, args.data_dir_target, args.input_size_target, args.val_list, city=args.city,
                             labels=labels)
        if val.gt_paths is None:
            raise FileNotFoundError("--val: no ground truth at {} to score the snapshots with".format(val.gt_dir))
        self.images, self.gt_paths, self.lut = val.images, val.gt_paths, val.lut
        self.classes = args.class_set
        self.settings = evaluation_settings(args.data_dir_target, args.val_list, val.split, val.gt_dir, None,
                                            "DeeplabMulti", args.input_size_target, len(self.images), self.classes,
                                            labels)

    def __call__(self, model, model_path, iteration, log, best_path):
        """Score ``model`` (saved at ``model_path``) and log it; returns the line it logged."""
        try:
            with random_state_kept():
                predictor = SegmentationPredictor(model, self.backend, self.use_gpu, self.gpu_id)
                result = evaluate(predictor, self.images, self.gt_paths, self.lut, batch_size=1,
                                  num_workers=min(self.args.num_workers, 2), progress=False, watchdog=self.watchdog,
                                  classes=self.classes)
        finally:
            predictor = None
            release_memory(self.use_gpu)
        save_score(model_path, self.settings, result, iteration)
        best = log.best("val/mIoU")
        scalars = {"val/mIoU": result.miou}
        scalars.update(("val/mIoU_" + name, miou) for name, miou in list(result.miou_by_classes.items())[1:]
                       if np.isfinite(miou))
        scalars.update(("val/IoU_" + name, float(iou)) for name, iou in zip(self.classes.names, result.ious)
                       if np.isfinite(iou))
        log.scalars(iteration, scalars)
        if best is None or result.miou > best[1]:
            atomic_copy(model_path, best_path)
            best = (iteration, result.miou)
        message = "iter {} val mIoU {:.2f} on {} images (best {:.2f} at {}, {})".format(
            iteration, result.miou * 100, result.num_images, best[1] * 100, best[0], os.path.basename(best_path))
        log.text(message)
        return message
