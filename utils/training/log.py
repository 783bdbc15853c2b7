"""What a training run records: train.log (text), metrics.jsonl (numbers) and VisualDL.

metrics.jsonl and the prediction pictures are the record; the VisualDL file is a view rebuilt
from them whenever a run starts. VisualDL files can only be written from the start and a run
directory shows one file, so this is how a resumed run continues the same curves: whatever the
killed run logged after the snapshot it resumes from is dropped first, and no step appears twice.
"""
from PIL import Image

import glob
import json
import os
import re
import warnings

import numpy as np

from utils.files.atomic import atomic_write_text

METRICS_FILE = "metrics.jsonl"
TEXT_LOG = "train.log"
VISUALDL_DIR = "visualdl"
PICTURES_DIR = "predictions"
HPARAMS_METRICS = ("val/mIoU", "loss/seg2")  # what VisualDL's HParams view sets beside each run's settings
_STEP_LINE = re.compile(r"^iter (\d+)")
_PICTURE = re.compile(r"^iter_(\d+)\.png$")


def _kept_lines(path, keep):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line for line in f if keep(line)]


def _records_up_to(path, last_step):
    """The records of metrics.jsonl with step <= ``last_step``; a line a crash left half-written
    is dropped with a warning."""
    records = []
    for line in _kept_lines(path, lambda line: line.strip()):
        try:
            record = json.loads(line)
            step = record["step"]
        except (ValueError, KeyError, TypeError):
            warnings.warn("{}: dropping an unreadable line (cut short by a crash?): {!r}".format(path, line[:80]))
            continue
        if step <= last_step:
            records.append(record)
    return records


class TrainLog(object):
    """Logs of the run in ``directory``, continuing after iteration ``start_iter``."""

    def __init__(self, directory, start_iter=0, use_visualdl=True, hparams=None):
        self.directory = directory
        os.makedirs(os.path.join(directory, PICTURES_DIR), exist_ok=True)
        self._metrics_path = os.path.join(directory, METRICS_FILE)
        self._text_path = os.path.join(directory, TEXT_LOG)

        records = _records_up_to(self._metrics_path, start_iter)
        self.records = records  # every record of the run, kept in memory
        atomic_write_text(self._metrics_path, "".join(json.dumps(record) + "\n" for record in records))

        def keep_text(line):
            match = _STEP_LINE.match(line)
            return start_iter > 0 and (match is None or int(match.group(1)) <= start_iter)

        atomic_write_text(self._text_path, "".join(_kept_lines(self._text_path, keep_text)))
        pictures = {}
        for path in glob.glob(os.path.join(directory, PICTURES_DIR, "iter_*.png")):
            match = _PICTURE.match(os.path.basename(path))
            if match and int(match.group(1)) > start_iter:
                os.remove(path)
            elif match:
                pictures[int(match.group(1))] = path
        self._metrics = open(self._metrics_path, "a")
        self._text = open(self._text_path, "a")
        self._visualdl = self._open_visualdl(records, pictures) if use_visualdl else None
        if hparams is not None and self._visualdl is not None:
            self._add_hparams(hparams)

    def _open_visualdl(self, records, pictures):
        from visualdl import LogWriter
        logdir = os.path.join(self.directory, VISUALDL_DIR)
        for old in glob.glob(os.path.join(logdir, "vdlrecords.*")):
            os.remove(old)
        writer = LogWriter(logdir=logdir)
        for record in records:
            for tag, value in record["scalars"].items():
                writer.add_scalar(tag, value, record["step"])
        for step, path in sorted(pictures.items()):
            writer.add_image("target prediction", np.asarray(Image.open(path).convert("RGB")), step)
        return writer

    def _add_hparams(self, settings):
        """The run's settings for VisualDL's HParams view (visualdl 2.2 and newer have it), so that
        runs under one --logdir can be compared by their settings."""
        if not hasattr(self._visualdl, "add_hparams"):
            return
        plain = {name: value if isinstance(value, (int, float, str)) and not isinstance(value, bool) else str(value)
                 for name, value in settings.items() if value is not None}
        self._visualdl.add_hparams(plain, list(HPARAMS_METRICS))

    def scalars(self, step, values):
        """``values``: {tag: float}, e.g. {"loss/seg2": 0.7, "lr/G": 2.5e-4}."""
        record = {"step": step, "scalars": values}
        self.records.append(record)
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()
        if self._visualdl is not None:
            for tag, value in values.items():
                self._visualdl.add_scalar(tag, value, step)

    def picture(self, step, rgb):
        """An HxWx3 uint8 picture (a target image, its colourised prediction and its entropy)."""
        path = os.path.join(self.directory, PICTURES_DIR, "iter_{}.png".format(step))
        Image.fromarray(rgb).save(path)
        if self._visualdl is not None:
            self._visualdl.add_image("target prediction", rgb, step)

    def text(self, line):
        """A line of train.log; lines of iteration N start with ``iter N``."""
        self._text.write(line.rstrip("\n") + "\n")
        self._text.flush()

    def best(self, tag):
        """(step, value) of the highest ``tag`` logged so far, or None."""
        logged = [(r["scalars"][tag], -r["step"]) for r in self.records if tag in r["scalars"]]
        if not logged:
            return None
        value, step = max(logged)
        return -step, value

    def close(self):
        self._metrics.close()
        self._text.close()
        if self._visualdl is not None:
            self._visualdl.close()


class SilentLog(object):
    """What ranks other than the main one log: nothing (only rank 0 writes)."""

    records = ()

    def scalars(self, step, values):
        pass

    def picture(self, step, rgb):
        pass

    def text(self, line):
        pass

    def best(self, tag):
        return None

    def close(self):
        pass


def read_metrics(directory):
    """A run's metrics.jsonl as {tag: (steps, values)}, tags in the order first logged; lines a
    crash cut short are left out."""
    metrics = {}
    for record in _records_up_to(os.path.join(directory, METRICS_FILE), float("inf")):
        for tag, value in record["scalars"].items():
            steps, values = metrics.setdefault(tag, ([], []))
            steps.append(record["step"])
            values.append(value)
    return metrics


def prediction_picture(model, images, classes):
    """The first image, its colourised prediction (conv5 head) and the prediction's entropy (over
    log(classes): black certain, white uniform; what ADVENT lowers), side by side. In evaluation
    mode: a training-mode forward would move BN's running statistics with --bn train."""
    import paddle  # (here: reading a run's logs needs no Paddle)
    import paddle.nn.functional as F
    from dataset.classes import IMG_MEAN_BGR
    model.eval()
    with paddle.no_grad():
        logits = model(images[:1])[-1]
        model.train()
        up = F.interpolate(logits, size=images.shape[2:], mode="bilinear", align_corners=True)
        labels = paddle.argmax(up, axis=1)[0].numpy()
        log_probs = F.log_softmax(up, axis=1)
        entropy = (-paddle.sum(paddle.exp(log_probs) * log_probs, axis=1)[0] / np.log(up.shape[1])).numpy()
    image = (images[0].numpy().transpose(1, 2, 0) + IMG_MEAN_BGR)[:, :, ::-1]
    grey = np.round(np.clip(entropy, 0.0, 1.0) * 255).astype(np.uint8)
    return np.concatenate([np.clip(image, 0, 255).astype(np.uint8), classes.colorize(labels),
                           np.repeat(grey[:, :, None], 3, axis=2)], axis=1)
