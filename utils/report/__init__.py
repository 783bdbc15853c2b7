"""What one run or many achieved and whether they are healthy: ``python report.py RUN_DIR [...]``.

Writes into --out a Markdown report (``report.md``, renders on GitHub and AI Studio), PNG plots
beside it and ``report.json`` holding every number of its tables. Per run: mIoU against
iteration, best and last snapshot with their per-class IoUs, losses, learning rates, speed, the
recipe and what differs from it, the environment and the health rules it breaks (utils/health.py).
Runs that differ only in --random-seed are grouped (mean and standard deviation, the median-seed
run); with a source-only baseline (and an oracle) the gap table says what adaptation gained per
class and how much of the gap it closed.
"""
import os
import re
import shlex

from utils.environment import describe_environment
from utils.health import RULES, describe_ranges
from utils.report import numbers
from utils.report.runs import ReportError, read_run

REPORT_FILE, JSON_FILE = "report.md", "report.json"


def _pct(value, digits=2):
    return "-" if value is None else "{:.{}f}".format(100 * value, digits)


def _signed(value):
    return "-" if value is None else "{:+.2f}".format(100 * value)


def _share(value):
    return "-" if value is None else "{:.0f}%".format(100 * value)


def _slug(name, taken):
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "run"
    candidate, number = slug, 2
    while candidate in taken:
        candidate, number = "{}_{}".format(slug, number), number + 1
    taken.add(candidate)
    return candidate


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _check_classes(runs):
    sets = {}
    for run in runs:
        sets.setdefault(tuple(run.class_names or ()), []).append(run.name)
    if len(sets) > 1:
        raise ReportError("runs of different class sets cannot share one report: {}; report them separately".format(
            "; ".join("{} ({} classes)".format(", ".join(names), len(classes)) for classes, names in sets.items())))


def _health_lines(summary):
    if not summary["health"]:
        return ["No health rule is broken."]
    return ["- **{}** ({}, iterations {}): {}.".format(h["rule"], h["curve"], describe_ranges(h["ranges"]),
                                                       h["sentence"]) for h in summary["health"]]


def _run_section(run, summary, files):
    lines = ["## Run `{}`".format(run.name), "", "Directory: `{}`".format(run.directory), ""]
    differs = summary["differs_from_recipe"]
    if summary["recipe"]:
        lines.append("Recipe **{}**; {}.".format(summary["recipe"], "as the recipe sets it" if not differs else
                                                  "differs from it in: " + ", ".join(
                                                      "`--{}` {} (recipe: {})".format(n.replace("_", "-"), d["value"],
                                                                                    d["recipe"])
                                                      for n, d in differs.items())))
    else:
        lines.append("Recipe: not recorded.")
    settings = run.settings or {}
    shown = ("source", "target", "random_seed", "num_steps_stop", "save_pred_every", "input_size", "input_size_target",
             "random_mirror", "amp", "source_only", "restore_from")
    if settings:
        lines += ["", "Settings: " + ", ".join("`{}` {}".format(k, settings[k]) for k in shown if k in settings) + "."]
    lines += ["", describe_environment(run.environment) + "."]
    lines += ([""] + ["- " + note + "." for note in run.notes]) if run.notes else []
    best, last = summary["best"], summary["last"]
    speed = summary["speed_iter_per_s"]
    lines += ["", "Best snapshot: **{} mIoU** at iteration {}; last: **{}** at {}; {} snapshots scored{}.".format(
        _pct(best["mIoU"]), best["iteration"], _pct(last["mIoU"]), last["iteration"], len(summary["mIoU"]),
        "; median speed {:.3g} iterations/s".format(speed) if speed is not None else "")]
    if "miou" in files:
        lines += ["", "![mIoU of {}]({})".format(run.name, files["miou"])]
    lines += ["", _table(["iteration"] + list(summary["mIoU"]),
                         [["mIoU"] + [_pct(v) for v in summary["mIoU"].values()]])]
    lines += ["", "Per class (IoU %):", "", _table(
        ["class", "best ({})".format(best["iteration"]), "last ({})".format(last["iteration"])],
        [[name, _pct(best["IoU"][name]), _pct(last["IoU"].get(name))] for name in best["IoU"]])]
    for key, title in (("losses", "losses"), ("schedule", "learning rates and speed")):
        if key in files:
            lines += ["", "![{} of {}]({})".format(title, run.name, files[key])]
    lines += ["", "**Health**", ""] + _health_lines(summary)
    return lines


def write_report(run_dirs, out, baseline=None, oracle=None, which="last", score=True, plots=True, log=print,
                 command=None, backend="auto"):
    """Read the runs, write ``out``/report.md, report.json and the plots; returns report.md's path.
    ``baseline``/``oracle``: run directories (a source-only run, a run trained on the target's
    labels); ``which``: the snapshot the gap table compares, "last" or "best"."""
    if plots:
        from utils.report import plots as draw
        draw._pyplot()  # a missing matplotlib ends the report before any scoring
    runs = [read_run(d, score, log, backend) for d in run_dirs]
    base = read_run(baseline, score, log, backend) if baseline else None
    top = read_run(oracle, score, log, backend) if oracle else None
    _check_classes(runs + [r for r in (base, top) if r is not None])
    os.makedirs(out, exist_ok=True)
    taken = set()
    report = {"command": command, "runs": [], "seed_groups": [], "gap": []}
    body = []
    for run in runs:
        summary = numbers.run_summary(run)
        slug = _slug(run.name, taken)
        files = {}
        if plots:
            files = {"miou": slug + "_miou.png", "losses": slug + "_losses.png", "schedule": slug + "_schedule.png"}
            draw.miou_plot(run, os.path.join(out, files["miou"]))
            draw.loss_plot(run, os.path.join(out, files["losses"]))
            draw.schedule_plot(run, os.path.join(out, files["schedule"]))
        summary["plots"] = files
        report["runs"].append(summary)
        body += [""] + _run_section(run, summary, files)

    lines = ["# Report on {} run{}".format(len(runs), "s" if len(runs) > 1 else ""), ""]
    if command:
        lines += ["Written by `{}`.".format(command), ""]
    lines += ["mIoU in %, as the cached scores of each snapshot have it (`<PREFIX>_<N>.eval.json`).", "",
              _table(["run", "seed", "recipe", "best mIoU (iteration)", "last mIoU (iteration)", "health"],
                     [[s["name"], s["seed"], s["recipe"] or "-", "{} ({})".format(_pct(s["best"]["mIoU"]),
                                                                                   s["best"]["iteration"]),
                       "{} ({})".format(_pct(s["last"]["mIoU"]), s["last"]["iteration"]),
                       ", ".join(sorted({h["rule"] for h in s["health"]})) or "ok"] for s in report["runs"]])]

    groups = [group for group in numbers.seed_groups(runs) if len(group) > 1]
    if groups:
        lines += ["", "## Seeds", "",
                  "Runs that differ only in `--random-seed`: mean ± sample standard deviation (n-1) over the seeds; "
                  "the median-seed run is the median by last mIoU (of an even number, the lower middle one)."]
    for number, group in enumerate(groups, 1):
        summary = numbers.group_summary(group)
        if plots:
            summary["plot"] = "seeds_{}.png".format(number)
            draw.seeds_plot(group, summary, os.path.join(out, summary["plot"]))
        report["seed_groups"].append(summary)
        lines += ["", "### Group {}: {}".format(number, ", ".join("`{}` (seed {})".format(r.name, r.seed)
                                                                  for r in group)), "",
                  _table(["", "mean", "std"], [["best mIoU", _pct(summary["best_mIoU"]["mean"]),
                                                _pct(summary["best_mIoU"]["std"])],
                                               ["last mIoU", _pct(summary["last_mIoU"]["mean"]),
                                                _pct(summary["last_mIoU"]["std"])]]),
                  "", "Median-seed run: `{}` (seed {}).".format(summary["median_seed_run"], summary["median_seed"])]
        if plots:
            lines += ["", "![mIoU over seeds]({})".format(summary["plot"])]
        lines += ["", _table(["iteration", "mean", "std"], [[it, _pct(v["mean"]), _pct(v["std"])]
                                                             for it, v in summary["mIoU_at"].items()])]

    if base is not None:
        lines += ["", "## What adaptation gained", "",
                  "Baseline: `{}` (source only){}. Compared at each run's **{}** snapshot; adapted = the median-seed "
                  "run of each group. Gain = adapted - baseline; gap closed = gain / (oracle - baseline).".format(
                      base.name, "; oracle: `{}` (trained on the target's labels)".format(top.name) if top else "",
                      which)]
        for number, group in enumerate(numbers.seed_groups(runs), 1):
            adapted = numbers.median_run(group, lambda run: run.scores[run.last]["mIoU"])
            gap = numbers.gap_table(base, adapted, top, which)
            if plots:
                gap["plot"] = "gap_{}.png".format(number)
                draw.gap_plot(gap, os.path.join(out, gap["plot"]))
            report["gap"].append(gap)
            header = ["class", "baseline", "adapted"] + (["oracle"] if top else []) + ["gain"] + (
                ["gap closed"] if top else [])
            rows = [[r["class"] if r["class"] != "mIoU" else "**mIoU**", _pct(r["baseline"]), _pct(r["adapted"])] +
                    ([_pct(r["oracle"])] if top else []) + [_signed(r["gain"])] +
                    ([_share(r["gap_closed"])] if top else []) for r in gap["rows"]]
            lines += ["", "### `{}`".format(adapted.name), "", _table(header, rows)]
            if plots:
                lines += ["", "![gap]({})".format(gap["plot"])]
        report["baseline"] = numbers.run_summary(base)
        report["oracle"] = numbers.run_summary(top) if top else None

    lines += body
    lines += ["", "## Health rules", "", "Each rule, what it means and where its threshold comes from "
              "(utils/health.py; training prints a warning line when one starts to break).", ""]
    lines += ["- **{}**: {}. Threshold: {}.".format(rule.name, rule.sentence, rule.source) for rule in RULES]
    path = os.path.join(out, REPORT_FILE)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out, JSON_FILE), "w") as f:
        f.write(numbers.dumps(report) + "\n")
    return path


def command_of(argv):
    return "python report.py " + " ".join(shlex.quote(a) for a in argv)
