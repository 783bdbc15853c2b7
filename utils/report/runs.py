"""A run directory as the report reads it: its logged curves, the score of each snapshot (scoring
those not scored yet when the target's labels are there), its settings and its environment.

Everything is read from the files a run leaves (README: Training, Logs): ``metrics.jsonl``, the
cached scores ``<PREFIX>_<N>.eval.json``, ``class_set.json`` and the newest snapshot state
(``extra``: ``settings``, ``args``, ``environment``), without Paddle unless snapshots must be
scored.
"""
import glob
import json
import os
import re

from utils.environment import missing_fields
from utils.files.snapshots import CLASSES_FILE, STATE, SnapshotDir
from utils.files.weights import WeightsError, read_paddle_pickle
from utils.training.log import METRICS_FILE, TEXT_LOG, read_metrics

_CACHE = re.compile(r"^([A-Za-z][A-Za-z0-9]*)_(\d+)\.eval\.json$")
# Settings that do not change what a run computes: runs differing only in these (and the seed) are
# seeds of one experiment.
NOT_SHAPING = {"random_seed", "snapshot_dir", "explicit", "num_workers", "device", "gpu", "continue_train",
               "start_iter", "keep_last", "stop_after_minutes", "fast_stop", "val", "val_on_error", "val_backend",
               "check_data", "data_timeout", "cudnn_exhaustive_search", "log_every", "picture_every", "restore_sha256",
               "restore_md5", "no_hash_check", "is_training", "not_restore_last", "save_num_images", "name"}


class ReportError(Exception):
    """A run that cannot be reported; the message is the one line that says why and what to do."""


class Run(object):
    """One run directory, read. ``scores``: {iteration: the cached evaluation record}."""

    def __init__(self, directory, prefix, curves, scores, settings, kept, environment, class_names, notes):
        self.directory, self.prefix, self.curves, self.scores = directory, prefix, curves, scores
        self.settings, self.kept, self.environment, self.class_names = settings, kept, environment, class_names
        self.notes = notes  # what is missing or was done, a sentence each
        self.name = os.path.basename(os.path.normpath(directory))

    @property
    def mious(self):
        return {it: self.scores[it]["mIoU"] for it in sorted(self.scores)}

    @property
    def best(self):
        """The iteration of the highest mIoU (the earliest of equals, as evaluation picks it)."""
        mious = self.mious
        return max(mious, key=lambda it: (mious[it], -it))

    @property
    def last(self):
        return max(self.scores)

    @property
    def seed(self):
        return (self.settings or {}).get("random_seed")

    def curves_with_scores(self):
        """The logged curves, with ``val/mIoU`` as the scores have it (also for runs without --val)."""
        from utils.health import MIOU
        curves = dict(self.curves)
        mious = self.mious
        curves[MIOU] = (list(mious), list(mious.values()))
        return curves

    def recipe_differences(self):
        """{setting: {"value": the run's, "recipe": the recipe's}} of every recipe value the run changed
        (None when its recipe is not recorded)."""
        if not self.settings or not self.settings.get("recipe"):
            return None
        from utils.methods import METHODS, method_class  # (the methods declare the recipes)
        from utils.training.options import SHARED_PARAMS
        from utils.training.params import recipe_values
        for name in METHODS:
            method = method_class(name)
            if all(param.name in self.settings for param in method.params):
                recipe = next((r for r in method.recipes if r.name == self.settings["recipe"]), None)
                if recipe is None:
                    continue
                values = recipe_values(SHARED_PARAMS + list(method.params), recipe)
                return {name: {"value": self.settings.get(name), "recipe": value} for name, value in values.items()
                        if _plain(self.settings.get(name)) != _plain(value)}
        return None

    def experiment(self):
        """What the run computes, but for its seed: equal for runs that differ only in --random-seed."""
        if self.settings is None:
            return None
        shaping = {k: v for k, v in self.settings.items() if k not in NOT_SHAPING}
        return json.dumps(shaping, sort_keys=True, default=str)


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def is_run(directory):
    return os.path.isdir(directory) and (
        os.path.exists(os.path.join(directory, METRICS_FILE)) or os.path.exists(os.path.join(directory, TEXT_LOG)) or
        bool(SnapshotDir.detect(directory).present()))


def _state(snapshots):
    """``extra`` of the newest snapshot state that reads, or None."""
    for iteration in sorted(snapshots.present(), reverse=True):
        path = snapshots.files(iteration)[STATE]
        if os.path.exists(path):
            try:
                saved = read_paddle_pickle(path)
                return dict(saved.get("extra") or {})
            except (WeightsError, AttributeError):
                continue
    return None


def _cached_scores(directory, prefix):
    """{iteration: record} of the cached evaluations still matching their snapshot file (a cache whose
    snapshot was rewritten since is stale and left out)."""
    scores = {}
    for path in glob.glob(os.path.join(directory, "*.eval.json")):
        match = _CACHE.match(os.path.basename(path))
        if not match or match.group(1) != prefix:
            continue
        try:
            with open(path) as f:
                record = json.load(f)
        except (OSError, ValueError):
            continue
        weights = path[:-len(".eval.json")] + ".pdparams"
        fingerprint = record.get("fingerprint", {})
        if os.path.exists(weights):
            stat = os.stat(weights)
            if (fingerprint.get("size"), fingerprint.get("mtime_ns")) != (stat.st_size, stat.st_mtime_ns):
                continue
        scores[int(match.group(2))] = record
    return scores


def _class_names(directory, scores):
    path = os.path.join(directory, CLASSES_FILE)
    if os.path.exists(path):
        with open(path) as f:
            return list(json.load(f)["names"])
    if scores:
        return list(next(iter(scores.values()))["IoU"])
    return None


def score_snapshots(directory, settings, log=print, backend="auto"):
    """Score every snapshot of the run not scored yet, as --val scores them (same data, size and
    cache). Returns the evaluation's reason for not scoring (a sentence), or None once scored."""
    from dataset.sources import CUSTOM, scored_classes, target_classes  # (Paddle: only when scoring)
    from utils.evaluation.cityscapes import evaluate_snapshots, evaluation_set, evaluation_settings
    target, data_dir = settings.get("target", "cityscapes"), settings.get("data_dir_target")
    if not data_dir or not os.path.isdir(data_dir):
        return "its target data {} is not there".format(data_dir)
    classes = scored_classes(settings.get("source", "gta5"), target, settings.get("classes"))
    labels = target_classes(target, settings.get("classes")) if target == CUSTOM else None
    size = tuple(settings.get("input_size_target") or (1024, 512))
    val = evaluation_set(target, data_dir, size, settings.get("val_list"), city=settings.get("city"), labels=labels)
    if val.gt_paths is None:
        return "there are no labels at {} to score it with".format(val.gt_dir)
    import paddle
    from model import build_model
    from model.inference import SegmentationPredictor
    from utils.evaluation.validation import validation_backend
    use_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    evaluation = evaluation_settings(data_dir, settings.get("val_list"), val.split, val.gt_dir, None, "DeeplabMulti",
                                     size, len(val.images), classes, labels)
    model = build_model(settings.get("model", "DeepLab"), num_classes=classes.num_classes)
    evaluate_snapshots(model, directory, lambda net: SegmentationPredictor(
        net, backend=validation_backend(backend, use_gpu), use_gpu=use_gpu), val.images, val.gt_paths, val.lut,
        settings=evaluation, classes=classes, log=log, num_workers=0)
    return None


def read_run(directory, score=True, log=print, backend="auto"):
    """The Run in ``directory``; a ReportError when it is not a run or nothing of it is scored nor can be."""
    if not os.path.isdir(directory):
        raise ReportError("{}: no such directory".format(directory))
    if not is_run(directory):
        raise ReportError("{} is not a run directory: it holds no {}, {} or snapshot <PREFIX>_<N>.pdparams; give the "
                          "--snapshot-dir of a training run".format(directory, METRICS_FILE, TEXT_LOG))
    snapshots = SnapshotDir.detect(directory)
    extra = _state(snapshots)
    notes = []
    settings = (extra or {}).get("settings")
    environment = (extra or {}).get("environment")
    if extra is None:
        notes.append("no readable snapshot state: its settings and environment are unknown")
    elif settings is None:
        notes.append("its snapshots predate recorded settings")
    if extra is not None and missing_fields(environment):
        notes.append("no environment record (written by runs since issue 29): {} unknown".format(
            ", ".join(missing_fields(environment))))
    scores = _cached_scores(directory, snapshots.prefix)
    unscored = [it for it in snapshots.segmentation_files() if it not in scores]
    if unscored and score:
        why_not = score_snapshots(directory, settings, log, backend) if settings else "its settings are unknown"
        if why_not is None:
            scores = _cached_scores(directory, snapshots.prefix)
            notes.append("scored {} snapshot(s) not scored before: {}".format(
                len(unscored), ", ".join(str(it) for it in unscored)))
        else:
            notes.append("{} snapshot(s) not scored: {}".format(len(unscored), why_not))
    elif unscored:
        notes.append("{} snapshot(s) not scored (scoring was not asked for)".format(len(unscored)))
    if not scores:
        raise ReportError("{}: no snapshot is scored and none can be: {}. Score them with evaluate_cityscapes.py "
                          "--restore-from {} --data-dir <target data>, or train with --val".format(
                              directory, notes[-1] if unscored else "it holds no snapshot", directory))
    return Run(directory, snapshots.prefix, read_metrics(directory), scores, settings, (extra or {}).get("args"),
               environment, _class_names(directory, scores), notes)
