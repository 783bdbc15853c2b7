"""A trained model on your own images: the files PaddleSeg's predict writes, for a folder that may be
long, and a run that may be stopped and started again.

For each input image ``<name>`` (its path relative to the folder or list file it came from, without
the extension; a single file: its name) the save folder receives

    <name>.png                           train ids, 8-bit: what evaluate_cityscapes.py writes
    pseudo_color_prediction/<name>.png   the train ids as a palette PNG in the class colours
    added_prediction/<name>.jpg          the image blended with the class colours
    label_ids/<name>.png                 (asked for) the class set's label values: Cityscapes label ids
    confidence/<name>.png                (asked for) the largest softmax probability, 0..1 as 0..255
    entropy/<name>.png                   (asked for) the softmax's entropy over log(classes), 0..1 as 0..255

Weights are run as evaluate_cityscapes.py runs them: BICUBIC resize to the input size, BGR minus
the ImageNet mean, the BN-folded network (Paddle Inference or the dynamic graph), the logits
upsampled bilinearly (align_corners=True) to the image's own size, argmax; so a Cityscapes image
gets the train ids evaluation writes for it. An exported model (model.export) does all of that
itself.

Every file is written to a temporary name and renamed: a run stopped midway leaves complete files
only, and the next run with the same settings predicts only the images missing one of theirs.
Images are decoded and preprocessed by a pool of threads ahead of the network, and the results
encoded and written by another behind it.
"""
from PIL import Image, ImageOps

import collections
import json
import math
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple, Optional

import numpy as np
import paddle
import paddle.nn.functional as F

from dataset.classes import CITYSCAPES, IMG_MEAN_BGR, model_classes
from dataset.files import IMAGE_EXTENSIONS, image_to_input, images_below
from model.inference import BACKENDS as WEIGHTS_BACKENDS, SegmentationPredictor, upsample_argmax
from utils.files.atomic import TMP_SUFFIX, atomic_write, atomic_write_json

DEFAULT_INPUT_SIZE = (1024, 512)  # (W, H): what evaluation resizes Cityscapes images to
# The weight of the image in added_prediction/, as PaddleSeg's visualize(weight=0.6).
DEFAULT_ALPHA = 0.6
LIST_SUFFIX = ".txt"
SETTINGS_FILE = "prediction_settings.json"
# model.inference's backends run weights; "onnx" runs an exported model with ONNX Runtime (model.export).
BACKENDS = WEIGHTS_BACKENDS + ("onnx",)

TRAIN_IDS, PSEUDO_COLOR, ADDED, LABEL_IDS, CONFIDENCE, ENTROPY = (
    "train ids", "pseudo colour", "added", "label ids", "confidence", "entropy")
# kind -> (folder under the save folder, file suffix)
OUTPUTS = collections.OrderedDict([
    (TRAIN_IDS, ("", ".png")),
    (PSEUDO_COLOR, ("pseudo_color_prediction", ".png")),
    (ADDED, ("added_prediction", ".jpg")),
    (LABEL_IDS, ("label_ids", ".png")),
    (CONFIDENCE, ("confidence", ".png")),
    (ENTROPY, ("entropy", ".png")),
])
# Full-resolution colour (4:4:4): the default 4:2:0 halves the chroma, blurring the class borders.
JPEG_OPTIONS = {"format": "JPEG", "quality": 90, "subsampling": 0}
# A temporary file older than this was left by a run that died while writing it (writes take milliseconds).
STALE_TMP_SECONDS = 60.0


class PredictionError(ValueError):
    """Nothing can be predicted as asked: one line per problem, naming the flag or file at fault."""


class ImageError(Exception):
    """One input image cannot be decoded; the message names it."""


class InputImage(NamedTuple):
    path: str  # the file to read
    name: str  # where its outputs go: '/'-separated, relative to the save folder, no extension


# ----------------------------------------------------------------------------- the inputs


def _stem(relative_path):
    return os.path.splitext(relative_path.replace(os.sep, "/"))[0]


def _list_entries(list_path, problems):
    """(path, name) of each line of a list file; a line may be PaddleSeg's "image label"."""
    folder = os.path.dirname(os.path.abspath(list_path))
    entries = []
    with open(list_path) as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            entry = line if os.path.isfile(os.path.join(folder, line)) else line.split()[0]
            path = os.path.normpath(os.path.join(folder, entry))
            if not os.path.isfile(path):
                problems.append("--images {} line {}: no such image {}".format(list_path, number, path))
                continue
            relative = os.path.relpath(path, folder)
            entries.append((path, _stem(os.path.basename(path) if relative.startswith("..") else relative)))
    if not entries and not problems:
        problems.append("--images {}: the list names no images".format(list_path))
    return entries


def find_images(specs):
    """[InputImage] of ``--images`` arguments: image files, folders (searched recursively, sorted) and
    list files (.txt, one image a line, relative to the list's folder). Raises PredictionError with
    a line for each missing path, empty folder or empty list."""
    problems, images = [], []
    for spec in specs:
        if os.path.isdir(spec):
            found = images_below(spec)
            if not found:
                problems.append("--images {}: no images ({}) in this folder or below it".format(
                    spec, ", ".join("*" + suffix for suffix in IMAGE_EXTENSIONS)))
            images += [InputImage(os.path.join(spec, entry), _stem(entry)) for entry in found]
        elif os.path.isfile(spec) and spec.lower().endswith(LIST_SUFFIX):
            images += [InputImage(path, name) for path, name in _list_entries(spec, problems)]
        elif os.path.isfile(spec):
            images.append(InputImage(spec, _stem(os.path.basename(spec))))
        else:
            problems.append("--images {}: no such file or folder".format(spec))
    if problems:
        raise PredictionError("\n".join(problems))
    unique, seen = [], set()
    for image in images:  # the same file named twice (a folder and a file in it) is predicted once
        key = (os.path.realpath(image.path), image.name)
        if key not in seen:
            seen.add(key)
            unique.append(image)
    return unique


def check_save_folder(save_dir, specs):
    """Refuse a save folder that is, or is inside, an input folder: a later run would read the
    outputs as images to predict."""
    save = os.path.realpath(save_dir)
    problems = []
    for spec in specs:
        if os.path.isdir(spec):
            folder = os.path.realpath(spec)
            if save == folder or save.startswith(folder.rstrip(os.sep) + os.sep):
                problems.append("--save {}: inside the input folder {}; the next run would take the outputs for "
                                "images to predict: choose a --save outside it".format(save_dir, spec))
    if problems:
        raise PredictionError("\n".join(problems))


def read_rgb(path):
    """HxWx3 uint8 RGB of an image file, turned as its EXIF orientation says; grey, palette, 16-bit
    and CMYK images are converted, an alpha channel is dropped (as OpenCV's imread does for
    PaddleSeg). Raises ImageError naming the file if it cannot be decoded."""
    try:
        with Image.open(path) as image:
            image.load()
            try:
                image = ImageOps.exif_transpose(image)
            except Exception:  # a damaged EXIF block: keep the pixels as stored
                pass
            if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grey: its top 8 bits
                image = Image.fromarray((np.asarray(image).astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8))
            return np.asarray(image.convert("RGB"))
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError... for broken files
        raise ImageError("cannot read image {}: {}".format(path, str(error) or type(error).__name__))


# ----------------------------------------------------------------------------- the model


class Prediction(NamedTuple):
    train_ids: np.ndarray             # HxW uint8 at the image's size
    confidence: Optional[np.ndarray]  # HxW float32 in 0..1, or None
    entropy: Optional[np.ndarray]     # HxW float32 in 0..1, or None


def upsample_prediction(logits, size, confidence=False, entropy=False):
    """Prediction of 1xCxhxw ``logits`` at ``size`` (H, W): train ids as model.inference.upsample_argmax
    makes them; with ``confidence``/``entropy``, the softmax of the same upsampled logits."""
    if not (confidence or entropy):
        return Prediction(upsample_argmax(logits, size)[0], None, None)
    with paddle.no_grad():
        up = F.interpolate(paddle.to_tensor(logits), size=list(size), mode="bilinear", align_corners=True)
        train_ids = paddle.argmax(up, axis=1).astype("uint8")[0].numpy()
        log_probs = F.log_softmax(up, axis=1)
        up = None  # freed before the entropy's temporaries, each as large (classes x H x W floats)
        most = paddle.exp(paddle.max(log_probs, axis=1))[0].numpy() if confidence else None
        spread = None
        if entropy:
            nats = -paddle.sum(paddle.exp(log_probs) * log_probs, axis=1)[0]
            spread = (nats / math.log(log_probs.shape[1])).clip(0.0, 1.0).numpy()
    return Prediction(train_ids, most, spread)


class WeightsSegmenter(object):
    """A network with its weights, run as evaluation runs it. ``prepare`` (any thread) turns an RGB
    image into the network's input; ``predict`` (the thread that made the segmenter) runs it."""

    def __init__(self, model, classes, input_size=DEFAULT_INPUT_SIZE, backend="inference", use_gpu=False, gpu_id=0):
        self.classes = classes
        self.input_size = tuple(input_size)
        self.network = SegmentationPredictor(model, backend=backend, use_gpu=use_gpu, gpu_id=gpu_id)
        self.network_seconds = 0.0  # spent in the network alone: what a benchmark compares the rest with

    def prepare(self, rgb):
        return image_to_input(Image.fromarray(rgb), self.input_size, IMG_MEAN_BGR)

    def predict(self, prepared, size, confidence=False, entropy=False):
        start = time.perf_counter()
        logits = self.network(prepared[None])
        self.network_seconds += time.perf_counter() - start
        return upsample_prediction(logits, size, confidence, entropy)


class ExportSegmenter(object):
    """An exported model (model.export.ExportedModel): it resizes, runs and upsamples by itself and
    gives train ids and the confidence, not the entropy."""

    def __init__(self, exported, classes):
        self.exported = exported
        self.classes = classes
        self.input_size = exported.input_size  # (W, H), or None: the graph takes each image at its size
        self.network_seconds = 0.0  # here the resize and upsampling too: they happen inside the export

    def prepare(self, rgb):
        return rgb

    def predict(self, prepared, size, confidence=False, entropy=False):
        start = time.perf_counter()
        train_ids, most = self.exported.predict(prepared)
        self.network_seconds += time.perf_counter() - start
        return Prediction(np.asarray(train_ids, dtype=np.uint8), most if confidence else None, None)


def choose_classes(record, classes_file=None, num_classes=None, what="the model"):
    """The ClassSet a model's predictions are drawn and labelled with (dataset.classes.model_classes).
    A model of the 19 Cityscapes classes in their colours (a GTA5, SYNTHIA or Cityscapes run) writes
    Cityscapes label ids, the format of the benchmark's server, whatever its source's labels were."""
    classes = model_classes(record, classes_file, num_classes, what)
    if list(classes.names) == list(CITYSCAPES.names) and np.array_equal(classes.colours, CITYSCAPES.colours):
        return CITYSCAPES
    return classes


def describe_size(size):
    return "{}x{}".format(*size) if size else "the image's own size"


def load_segmenter(restored, classes, model_name="DeeplabMulti", input_size=None, backend="inference",
                   use_gpu=False, gpu_id=0, check_hash=True, confidence=False, entropy=False, log=print):
    """The segmenter of a model.restore.Restored: a WeightsSegmenter of its weights, or an
    ExportSegmenter of its exported model (``backend`` "inference" or "onnx"; its class_set.json is
    the record ``classes`` was chosen by). ``confidence``/``entropy``: the outputs asked for, which
    an export may not give."""
    if restored.kind == "export":
        if entropy:
            raise PredictionError("--entropy: {} is an exported model, which gives train ids and the confidence "
                                  "only; predict with its weights for the entropy".format(restored.path))
        if backend == "dygraph":
            raise PredictionError("--backend dygraph: {} is an exported model (a static graph); use --backend "
                                  "inference or onnx, or give the weights".format(restored.path))
        from model.export import ExportedModel  # imports ONNX Runtime only when asked for
        exported = ExportedModel(restored.path, use_gpu, gpu_id, backend)
        if confidence and exported.output_op == "argmax":
            raise PredictionError("--confidence: {} was exported with --output-op argmax, which gives train ids "
                                  "only; export it with --output-op softmax".format(restored.path))
        if input_size is not None and tuple(input_size) != tuple(exported.input_size or ()):
            raise PredictionError("--input-size {}: {} was exported for {}; drop --input-size or export it "
                                  "again".format(describe_size(input_size), restored.path,
                                                 describe_size(exported.input_size)))
        return ExportSegmenter(exported, classes)
    if backend == "onnx":
        raise PredictionError("--backend onnx runs an exported model: export {} first (README: Export for "
                              "deployment), or use --backend inference".format(restored.path))
    from model import build_model
    from utils.files.weights import load_weights
    model = build_model(model_name, num_classes=classes.num_classes)
    log(load_weights(model, restored.path, check_hash=check_hash).summary())
    return WeightsSegmenter(model, classes, input_size or DEFAULT_INPUT_SIZE, backend, use_gpu, gpu_id)


# ----------------------------------------------------------------------------- the outputs


def label_values_table(classes):
    """(train id -> stored label value table, note or None): each class's smallest value when it has
    several. Refuses a class set in which a class has none."""
    values = collections.defaultdict(list)
    for value, train_id in classes.label_values.items():
        if value >= 0:
            values[train_id].append(value)
    missing = [name for train_id, name in enumerate(classes.names) if not values[train_id]]
    if missing:
        raise PredictionError("--label-ids: in the class set {} the classes {} have no label value; give them "
                              "\"values\" in the class file".format(classes.name, ", ".join(missing)))
    largest = max(max(v) for v in values.values())
    table = np.zeros(256, dtype=np.uint8 if largest < 256 else np.uint16)
    for train_id, stored in values.items():
        table[train_id] = min(stored)
    several = ["{} ({})".format(classes.names[t], ", ".join(map(str, sorted(v)))) for t, v in sorted(values.items())
               if len(v) > 1]
    note = None
    if several:
        note = ("--label-ids: {} classes have several label values; each is written as its smallest: {}".format(
            len(several), "; ".join(several)))
    return table, note


def _to_byte(values):
    return np.round(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)


class Outputs(object):
    """What a run writes for each image under ``save_dir``, and whether it is there already."""

    def __init__(self, save_dir, classes, label_ids=False, confidence=False, entropy=False, alpha=DEFAULT_ALPHA):
        if not 0.0 <= alpha <= 1.0:
            raise PredictionError("--alpha {}: the image's weight in added_prediction/ must be within 0..1".format(
                alpha))
        self.save_dir = save_dir
        self.classes = classes
        self.alpha = alpha
        self.kinds = [TRAIN_IDS, PSEUDO_COLOR, ADDED] + [kind for kind, wanted in (
            (LABEL_IDS, label_ids), (CONFIDENCE, confidence), (ENTROPY, entropy)) if wanted]
        self.palette = classes.palette()
        self.label_table, self.label_note = label_values_table(classes) if label_ids else (None, None)

    def path(self, kind, name):
        folder, suffix = OUTPUTS[kind]
        return os.path.join(self.save_dir, folder, *(name + suffix).split("/"))

    def missing(self, name):
        """The kinds of ``name``'s outputs that are not written yet (a file there is complete: see atomic_write)."""
        return [kind for kind in self.kinds if not os.path.isfile(self.path(kind, name))]

    def check_names(self, images):
        """Refuse two inputs whose outputs would be the same file (a.jpg and a.png in one folder)."""
        owner, clashes = {}, []
        for image in images:
            for kind in self.kinds:
                path = os.path.normcase(os.path.abspath(self.path(kind, image.name)))
                if path in owner and owner[path] != image.path:
                    clashes.append("{} and {} would both be written as {}".format(owner[path], image.path, path))
                owner.setdefault(path, image.path)
        if clashes:
            raise PredictionError("\n".join(clashes[:5] + ["rename one of each pair, or predict them into different "
                                                           "--save folders"]))

    def settings(self, restored, model_name, input_size):
        """What the files depend on besides the image: a run with other settings may not mix its files in."""
        source = restored.path if os.path.isfile(restored.path) else os.path.join(restored.path, "deploy.yaml")
        stat = os.stat(source)
        settings = {"restore_from": os.path.abspath(restored.path), "size": stat.st_size,
                    "mtime_ns": stat.st_mtime_ns, "classes": list(self.classes.names), "alpha": self.alpha}
        if restored.kind == "weights":
            from model import MODEL_ALIASES
            settings.update(model=MODEL_ALIASES.get(model_name, model_name),
                            input_size=list(input_size or DEFAULT_INPUT_SIZE))
        return settings

    def check_settings(self, settings, overwrite=False):
        """Refuse a save folder holding the files of other settings, unless ``overwrite``."""
        path = os.path.join(self.save_dir, SETTINGS_FILE)
        if overwrite or not os.path.isfile(path):
            return
        with open(path) as handle:
            try:
                earlier = json.load(handle)
            except ValueError:
                earlier = {}
        if earlier != settings:
            changed = sorted(key for key in set(settings) | set(earlier) if earlier.get(key) != settings.get(key))
            raise PredictionError("--save {}: holds the outputs of other settings ({} differ: see {}); give "
                                  "--overwrite to replace them, or another --save".format(
                                      self.save_dir, ", ".join(changed), path))

    def begin(self, settings):
        """Keep ``settings`` in the save folder (after check_settings) and remove the temporary files
        of a run that died while writing."""
        os.makedirs(self.save_dir, exist_ok=True)
        self._remove_stale_temporaries()
        atomic_write_json(os.path.join(self.save_dir, SETTINGS_FILE), settings)

    def _remove_stale_temporaries(self):
        now = time.time()
        for directory, _, files in os.walk(self.save_dir):
            for file_name in files:
                if file_name.startswith(".") and file_name.endswith(TMP_SUFFIX):
                    path = os.path.join(directory, file_name)
                    try:
                        if now - os.path.getmtime(path) > STALE_TMP_SECONDS:
                            os.remove(path)
                    except OSError:
                        pass

    def picture(self, kind, rgb, prediction):
        """The PIL image of one output."""
        train_ids = prediction.train_ids
        if kind == TRAIN_IDS:
            return Image.fromarray(train_ids)
        if kind == PSEUDO_COLOR:
            picture = Image.fromarray(train_ids)
            picture.putpalette(self.palette.tobytes())
            return picture
        if kind == ADDED:
            blend = self.alpha * rgb.astype(np.float32) + (1.0 - self.alpha) * self.palette[train_ids]
            return Image.fromarray(np.round(blend).astype(np.uint8))
        if kind == LABEL_IDS:
            return Image.fromarray(self.label_table[train_ids])
        return Image.fromarray(_to_byte(prediction.confidence if kind == CONFIDENCE else prediction.entropy))

    def write(self, name, rgb, prediction, kinds):
        for kind in kinds:
            picture = self.picture(kind, rgb, prediction)
            options = JPEG_OPTIONS if kind == ADDED else {"format": "PNG"}
            atomic_write(self.path(kind, name), lambda tmp_path: picture.save(tmp_path, **options))


# ----------------------------------------------------------------------------- the run


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
    from tqdm import tqdm

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
