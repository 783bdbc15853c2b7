"""Time compute_mIoU on Cityscapes-sized (2048x1024) ground-truth / prediction pairs.

    python -m bench.bench_iou [--pairs 500] [--num-workers N]     (from the repository root)

Writes the pairs into a temporary directory (gtFine layout for the ground truth, flat
palettised predictions as the evaluation writes them), then times compute_mIoU alone.
"""
from PIL import Image

import argparse
import os
import shutil
import tempfile
import time

import numpy as np

from compute_iou import compute_mIoU
from dataset.cityscapes_dataset import IMAGE_SUFFIX, LABEL_SUFFIX
from dataset.classes import CITYSCAPES, IGNORE_LABEL
from dataset.synthetic import VAL_CITIES, scene_label_ids

CITYSCAPES_SIZE = (2048, 1024)


def write_pairs(out_dir, pairs, distinct=10, size=CITYSCAPES_SIZE, seed=0):
    """Write `pairs` gt/prediction pairs (copies of `distinct` different scenes, since
    encoding 2-megapixel PNGs is slow and not what is measured); return (gt_dir, pred_dir)."""
    gt_dir = os.path.join(out_dir, "gtFine", "val")
    pred_dir = os.path.join(out_dir, "pred")
    templates = os.path.join(out_dir, "templates")
    for folder in [pred_dir, templates] + [os.path.join(gt_dir, city) for city in VAL_CITIES]:
        os.makedirs(folder, exist_ok=True)
    width, height = size
    lut = CITYSCAPES.lut()
    for index in range(min(distinct, pairs)):
        rng = np.random.default_rng([seed, index])
        label_ids = scene_label_ids(width, height, rng)
        # An imperfect prediction: ignored pixels get some class, and a few blocks are wrong.
        pred = lut[label_ids]
        pred[pred == IGNORE_LABEL] = int(rng.integers(CITYSCAPES.num_classes))
        for _ in range(8):
            top, left = int(rng.integers(height - 64)), int(rng.integers(width - 128))
            pred[top:top + 64, left:left + 128] = int(rng.integers(CITYSCAPES.num_classes))
        Image.fromarray(label_ids).save(os.path.join(templates, "gt{}.png".format(index)))
        pred_image = Image.frombytes("P", (width, height), pred.tobytes())
        pred_image.putpalette(CITYSCAPES.palette().ravel().tolist())
        pred_image.save(os.path.join(templates, "pred{}.png".format(index)))
    for index in range(pairs):
        city = VAL_CITIES[index % len(VAL_CITIES)]
        stem = "{}_000000_{:06d}".format(city, index)
        template = index % min(distinct, pairs)
        shutil.copyfile(os.path.join(templates, "gt{}.png".format(template)),
                        os.path.join(gt_dir, city, stem + LABEL_SUFFIX))
        shutil.copyfile(os.path.join(templates, "pred{}.png".format(template)),
                        os.path.join(pred_dir, stem + IMAGE_SUFFIX))
    return gt_dir, pred_dir


def bench_iou(pairs=500, num_workers=None):
    """Seconds compute_mIoU takes on `pairs` fresh 2048x1024 pairs."""
    with tempfile.TemporaryDirectory() as work_dir:
        gt_dir, pred_dir = write_pairs(work_dir, pairs)
        start = time.perf_counter()
        compute_mIoU(gt_dir, pred_dir, num_workers=num_workers)
        seconds = time.perf_counter() - start
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description="Time compute_mIoU on synthetic 2048x1024 Cityscapes-like pairs.")
    parser.add_argument("--pairs", type=int, default=500, help="number of gt/prediction pairs (default 500)")
    parser.add_argument("--num-workers", type=int, default=None, help="passed to compute_mIoU")
    args = parser.parse_args(argv)
    seconds = bench_iou(args.pairs, args.num_workers)
    print("compute_mIoU: {} pairs of {}x{} in {:.2f} s ({:.1f} pairs/s, {} CPUs)".format(
        args.pairs, CITYSCAPES_SIZE[0], CITYSCAPES_SIZE[1], seconds, args.pairs / seconds, os.cpu_count()))


if __name__ == "__main__":
    main()
