"""The run over many images: a pool of threads decodes and preprocesses images ahead of the network,
another encodes and writes the results behind it, and the network runs in the calling thread."""
import collections
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

from tqdm import tqdm

from utils.prediction.inputs import ImageError, read_rgb
from utils.prediction.outputs import CONFIDENCE, ENTROPY


class Summary(NamedTuple):
    images: int           # inputs given
    predicted: int        # inputs predicted by this run
    already_done: int     # inputs whose outputs were all there: skipped
    unreadable: list      # [(path, reason)] of the inputs that could not be decoded
    stopped: bool         # --strict stopped at the first unreadable one
    seconds: float        # wall time of the predictions
    network_seconds: float  # of which in the network

    @property
    def ok(self):
        return not self.unreadable


class _Inline(object):
    """An executor without threads (``num_workers=0``): everything happens in the caller."""

    def submit(self, fn, *args):
        future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as error:
            future.set_exception(error)
        return future

    def shutdown(self, wait=True):
        pass


def _pool(workers, name):
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name) if workers > 0 else _Inline()


def _decode(segmenter, path):
    rgb = read_rgb(path)
    return rgb, segmenter.prepare(rgb)


def predict_images(segmenter, images, outputs, overwrite=False, strict=False, num_workers=2, progress=True,
                   log=print):
    """Predict every InputImage whose outputs are not all written (every one with ``overwrite``) and
    write what is missing. Unreadable images are named as they come and skipped (``strict``: the
    first one stops the run). ``num_workers`` threads decode ahead of the network and as many
    write behind it (0: none). Returns a Summary."""
    todo = []
    for image in images:
        kinds = list(outputs.kinds) if overwrite else outputs.missing(image.name)
        if kinds:
            todo.append((image, kinds))
    done = len(images) - len(todo)
    if done:
        log("{} of {} images already have all their outputs in {}: skipped (--overwrite predicts them again)".format(
            done, len(images), outputs.save_dir))
    want_confidence, want_entropy = CONFIDENCE in outputs.kinds, ENTROPY in outputs.kinds
    ahead = max(1, 2 * num_workers)  # images decoded (or written) at once: bounds the memory held
    readers, writers = _pool(num_workers, "predict-read"), _pool(num_workers, "predict-write")
    reading, writing = collections.deque(), collections.deque()
    unreadable, predicted, stopped = [], 0, False
    queued = iter(todo)
    bar = tqdm(total=len(todo), unit="img", desc="predicting", disable=not progress or not todo)
    start, network_before = time.perf_counter(), segmenter.network_seconds

    def read_next():
        for image, kinds in queued:
            reading.append((image, kinds, readers.submit(_decode, segmenter, image.path)))
            return

    try:
        for _ in range(ahead):
            read_next()
        while reading:
            image, kinds, decoded = reading.popleft()
            read_next()
            try:
                rgb, prepared = decoded.result()
            except ImageError as error:
                tqdm.write("skipped: {}".format(error))
                unreadable.append((image.path, str(error)))
                bar.update(1)
                if strict:
                    stopped = True
                    break
                continue
            prediction = segmenter.predict(prepared, rgb.shape[:2], want_confidence and CONFIDENCE in kinds,
                                           want_entropy and ENTROPY in kinds)
            writing.append(writers.submit(outputs.write, image.name, rgb, prediction, kinds))
            while len(writing) > ahead:
                writing.popleft().result()  # re-raises a failed write (a full disk)
            predicted += 1
            bar.update(1)
        while writing:
            writing.popleft().result()
    finally:
        bar.close()
        for _, _, decoded in reading:
            decoded.cancel()
        readers.shutdown(wait=True)
        writers.shutdown(wait=True)
    return Summary(len(images), predicted, done, unreadable, stopped, time.perf_counter() - start,
                   segmenter.network_seconds - network_before)


def describe_summary(summary, save_dir):
    """The lines a run ends with: counts, where the files are, and every unreadable image again."""
    lines = ["{} images: {} predicted, {} already done, {} unreadable{}; outputs in {}".format(
        summary.images, summary.predicted, summary.already_done, len(summary.unreadable),
        " (--strict: stopped at the first)" if summary.stopped else "", os.path.abspath(save_dir))]
    if summary.predicted and summary.seconds > 0:
        lines.append("{:.2f} images/s; {:.0f}% of the time in the network".format(
            summary.predicted / summary.seconds, 100.0 * summary.network_seconds / summary.seconds))
    if summary.unreadable:
        lines.append("unreadable images (skipped; no outputs):")
        lines += ["  {}".format(path) for path, _ in summary.unreadable]
    return lines
