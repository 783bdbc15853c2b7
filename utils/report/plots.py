"""The report's pictures, PNGs of one size (SIZE pixels), drawn with matplotlib off-screen.

matplotlib comes with visualdl (requirements.txt); only the report needs it, so a machine without
it gets one line saying how to install it, and training never imports this module."""
import numpy as np

FIGSIZE, DPI = (8.0, 4.5), 100
SIZE = (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI))  # (width, height) of every picture
LOSS_PREFIX = "loss/"


class MatplotlibMissing(ImportError):
    pass


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MatplotlibMissing("the report draws its plots with matplotlib, which is not installed: "
                                "pip install matplotlib (or pass --no-plots)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    fig.savefig(path, dpi=DPI)
    _pyplot().close(fig)
    return path


def smoothed(values, fraction=0.05):
    """An exponential moving average over about ``fraction`` of the points (TensorBoard's smoothing,
    with a span that follows the length of the run)."""
    values = np.asarray(values, dtype=np.float64)
    span = max(1.0, fraction * len(values))
    weight = 1.0 - 2.0 / (span + 1.0)
    out, average = np.empty_like(values), values[0] if len(values) else 0.0
    for index, value in enumerate(values):
        average = weight * average + (1.0 - weight) * value
        out[index] = average
    return out


def miou_plot(run, path):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGSIZE)
    mious = run.mious
    steps = list(mious)
    ax.plot(steps, [100 * v for v in mious.values()], "o-", color="tab:blue", label="mIoU")
    ax.plot([run.best], [100 * mious[run.best]], "*", markersize=16, color="tab:orange",
            label="best ({:.2f} at {})".format(100 * mious[run.best], run.best))
    ax.plot([run.last], [100 * mious[run.last]], "s", markersize=9, color="tab:green", fillstyle="none",
            label="last ({:.2f} at {})".format(100 * mious[run.last], run.last))
    ax.set(xlabel="iteration", ylabel="mIoU (%)", title="{}: mIoU of every scored snapshot".format(run.name))
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    return _save(fig, path)


def loss_plot(run, path):
    """One panel per logged loss: raw values faint, smoothed on top."""
    plt = _pyplot()
    tags = [tag for tag in run.curves if tag.startswith(LOSS_PREFIX)]
    columns = min(3, max(1, len(tags)))
    rows = max(1, -(-len(tags) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=FIGSIZE, squeeze=False)
    for ax, tag in zip(axes.flat, tags):
        steps, values = run.curves[tag]
        ax.plot(steps, values, color="tab:blue", alpha=0.25, linewidth=0.8)
        ax.plot(steps, smoothed(values), color="tab:blue", linewidth=1.5)
        ax.set_title(tag[len(LOSS_PREFIX):], fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tags):]:
        ax.axis("off")
    if not tags:
        axes.flat[0].text(0.5, 0.5, "no losses logged", ha="center", va="center")
    fig.suptitle("{}: losses (raw faint, smoothed)".format(run.name), fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def schedule_plot(run, path):
    """Both learning rates, and iterations per second."""
    plt = _pyplot()
    fig, (rates, speed) = plt.subplots(1, 2, figsize=FIGSIZE)
    for tag, colour in (("lr/G", "tab:blue"), ("lr/D", "tab:red")):
        if tag in run.curves:
            rates.plot(*run.curves[tag], color=colour, label=tag)
    rates.set(xlabel="iteration", ylabel="learning rate", title="learning rates")
    rates.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    rates.legend(loc="best")
    if "speed/iter_per_s" in run.curves:
        steps, values = run.curves["speed/iter_per_s"]
        speed.plot(steps, values, color="tab:green", alpha=0.25)
        speed.plot(steps, smoothed(values), color="tab:green")
    speed.set(xlabel="iteration", ylabel="iterations / s", title="speed")
    for ax in (rates, speed):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def seeds_plot(runs, summary, path):
    """Each seed faint; the mean over seeds with a band of one standard deviation."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for run in runs:
        mious = run.mious
        ax.plot(list(mious), [100 * v for v in mious.values()], "-", alpha=0.35,
                label="seed {} ({})".format(run.seed, run.name))
    steps = [int(it) for it in summary["mIoU_at"]]
    mean = np.array([summary["mIoU_at"][str(it)]["mean"] for it in steps]) * 100
    std = np.array([summary["mIoU_at"][str(it)]["std"] or 0.0 for it in steps]) * 100
    ax.plot(steps, mean, "o-", color="black", label="mean of {} seeds".format(len(runs)))
    ax.fill_between(steps, mean - std, mean + std, color="gray", alpha=0.3, label="± 1 standard deviation")
    ax.set(xlabel="iteration", ylabel="mIoU (%)", title="{} seeds: mIoU".format(len(runs)))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def gap_plot(gap, path):
    """Per class, baseline / adapted / oracle IoU side by side."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGSIZE)
    rows = gap["rows"]
    x = np.arange(len(rows))
    columns = [c for c in ("baseline", "adapted", "oracle") if any(r[c] is not None for r in rows)]
    width = 0.8 / len(columns)
    for index, column in enumerate(columns):
        ax.bar(x + (index - (len(columns) - 1) / 2) * width,
               [100 * r[column] if r[column] is not None else 0 for r in rows], width, label=column)
    ax.set_xticks(x)
    ax.set_xticklabels([r["class"] for r in rows], rotation=60, ha="right", fontsize=8)
    ax.set(ylabel="IoU (%)", title="source-only baseline, adapted{}".format(", oracle" if gap["oracle"] else ""))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
