"""The numbers of a report, from read runs (runs.py): per run, per group of seeds, and the gap
between a source-only baseline, the adapted runs and an oracle. Every number the Markdown shows
is in what these functions return, so that report.json holds them all."""
import collections
import json

import numpy as np

from utils.health import RULE, check, gan_of


def _finite(value):
    return None if value is None or not np.isfinite(value) else float(value)


def run_summary(run):
    """mIoU at every scored iteration, best and last snapshot with their per-class IoUs, the health
    findings, the settings that differ from the recipe."""
    best, last = run.best, run.last
    settings = run.settings or {}
    findings = check(run.curves_with_scores(), gan_of(settings), settings.get("num_steps_stop"))
    return collections.OrderedDict([
        ("name", run.name), ("directory", run.directory), ("prefix", run.prefix), ("seed", run.seed),
        ("recipe", settings.get("recipe")), ("differs_from_recipe", run.recipe_differences()),
        ("mIoU", collections.OrderedDict((str(it), v) for it, v in run.mious.items())),
        ("best", {"iteration": best, "mIoU": run.scores[best]["mIoU"], "IoU": run.scores[best]["IoU"]}),
        ("last", {"iteration": last, "mIoU": run.scores[last]["mIoU"], "IoU": run.scores[last]["IoU"]}),
        ("speed_iter_per_s", _median_of(run.curves.get("speed/iter_per_s"))),
        ("health", [{"rule": f.rule, "curve": f.tag, "ranges": [list(r) for r in f.ranges],
                     "sentence": RULE[f.rule].sentence, "source": RULE[f.rule].source} for f in findings]),
        ("environment", run.environment), ("notes", list(run.notes)),
    ])


def _median_of(curve):
    if not curve or not curve[1]:
        return None
    return float(np.median(curve[1]))


def mean_std(values):
    """(mean, sample standard deviation with n-1; None for one value)."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), (float(values.std(ddof=1)) if len(values) > 1 else None)


def median_run(runs, key):
    """The run whose ``key`` is the median; of an even number, the lower of the two middle ones
    (the conservative pick). Ties go to the lower seed."""
    ranked = sorted(runs, key=lambda run: (key(run), run.seed if run.seed is not None else 0))
    return ranked[(len(ranked) - 1) // 2]


def seed_groups(runs):
    """[[runs]] of runs that differ only in --random-seed (and settings that do not change what
    they compute), in the order given; a run of unknown settings is a group of its own."""
    groups = collections.OrderedDict()
    for index, run in enumerate(runs):
        key = run.experiment() or "unknown-{}".format(index)
        groups.setdefault(key, []).append(run)
    return list(groups.values())


def group_summary(runs):
    """Mean and standard deviation over seeds of the best and the last mIoU and of the mIoU at every
    iteration all the runs scored; the median-seed run (by its last mIoU)."""
    common = sorted(set.intersection(*(set(run.scores) for run in runs)))
    best_mean, best_std = mean_std([run.scores[run.best]["mIoU"] for run in runs])
    last_mean, last_std = mean_std([run.scores[run.last]["mIoU"] for run in runs])
    at = collections.OrderedDict()
    for iteration in common:
        mean, std = mean_std([run.scores[iteration]["mIoU"] for run in runs])
        at[str(iteration)] = {"mean": mean, "std": std}
    median = median_run(runs, lambda run: run.scores[run.last]["mIoU"])
    return collections.OrderedDict([
        ("runs", [run.name for run in runs]), ("seeds", [run.seed for run in runs]),
        ("best_mIoU", {"mean": best_mean, "std": best_std}), ("last_mIoU", {"mean": last_mean, "std": last_std}),
        ("mIoU_at", at), ("median_seed_run", median.name), ("median_seed", median.seed),
    ])


def pick(run, which):
    """The evaluation record of the run's ``which`` ("best" or "last") snapshot."""
    return run.scores[run.best if which == "best" else run.last]


def gap_table(baseline, adapted, oracle=None, which="last"):
    """Per class and overall: baseline / adapted / oracle IoU, the gain over the baseline and the share
    of the baseline-to-oracle gap closed (None where the gap is not positive or a value is missing)."""
    scores = [pick(run, which) if run is not None else None for run in (baseline, adapted, oracle)]
    rows = []
    names = list(scores[1]["IoU"]) + ["mIoU"]
    for name in names:
        base, ours, best = (None if s is None else _finite(s["mIoU"] if name == "mIoU" else s["IoU"].get(name))
                            for s in scores)
        gain = None if base is None or ours is None else ours - base
        share = None if gain is None or best is None or best - base <= 0 else gain / (best - base)
        rows.append(collections.OrderedDict([("class", name), ("baseline", base), ("adapted", ours),
                                             ("oracle", best), ("gain", gain), ("gap_closed", share)]))
    return {"snapshot": which, "baseline": baseline.name, "adapted": adapted.name,
            "oracle": oracle.name if oracle is not None else None, "rows": rows}


def dumps(report):
    return json.dumps(report, indent=2, default=str)
