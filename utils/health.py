"""Is a run healthy? Rules on its logged curves, each with the source of its threshold.

One definition for two readers: report.py lists, for each rule a run breaks, the iteration
ranges where it does; training (utils/training/session.py) prints a warning line when a rule
starts to break, once per episode. Numpy only: reading a run's health needs no Paddle.

Curves are what ``utils.training.log.read_metrics`` returns, ``{tag: (steps, values)}``. Windows
are measured in iterations and look back only (a trailing mean), so that what is decided about an
iteration never changes as the run goes on: a range found while training is the range the report
finds later.
"""
import math
from typing import NamedTuple

import numpy as np

LN2 = math.log(2.0)
# A discriminator that cannot tell the domains apart outputs 1/2 everywhere: its loss is then ln 2
# for the BCE of --gan Vanilla, (1/2)^2 for the squared error of --gan LS, and half of that for the
# weak-label method's --ls-gan (half the squared distance of the sigmoid).
CHANCE = {"Vanilla": LN2, "LS": 0.25, "LS-sigmoid": 0.125}
# (discriminator loss, the adversarial loss of the same level): AdaptSegNet's two levels and the
# weak-label method's category-wise discriminator.
ADVERSARIAL_PAIRS = (("loss/D1", "loss/adv_target1"), ("loss/D2", "loss/adv_target2"), ("loss/cw_D", "loss/cw_adv"))
MIOU = "val/mIoU"
LOSS_SCALE = "amp/loss_scale"

WINDOW = 1000               # iterations of a trailing mean: smooths the per-batch noise of a loss
PINNED_TOLERANCE = 0.01     # |D loss - chance| below this: D's outputs stay within 0.43..0.57 (BCE)
PINNED_FOR = 2000           # "for thousands of iterations"
COLLAPSED_D = 0.1           # half the lower end of the authors' 0.2~0.5
EXPLODED_ADV = -math.log(0.1)  # 2.30: D is over 90% sure that target outputs are target outputs
COLLAPSED_FOR = 1000
SEG_AFTER = 5000            # one snapshot interval (--save-pred-every's default)
MIOU_DROP = 0.03            # 3 points: beyond the 1-3 point swings between snapshots users report
LATE = 2.0 / 3.0            # the last third of the run
MIN_LOSS_SCALE = 1.0


class Rule(NamedTuple):
    name: str
    sentence: str   # what is wrong, in a user's words
    source: str     # where the threshold comes from


RULES = (
    Rule("discriminator_at_chance",
         "the discriminator loss stays at its chance value (ln 2 = 0.693 for --gan Vanilla, 0.25 for LS): the "
         "discriminator learns nothing, so the adversarial loss teaches the network nothing",
         "AdaptSegNet issue #109 (losses stuck at 0.693); within {} of chance (for BCE: outputs within 0.43..0.57) "
         "over a trailing {}-iteration mean, for at least {} iterations".format(PINNED_TOLERANCE, WINDOW, PINNED_FOR)),
    Rule("discriminator_collapse",
         "the discriminator loss collapses toward 0 while the adversarial loss explodes: the discriminator wins and "
         "its gradients stop being useful (lower --learning-rate-D or --lambda-adv-target*)",
         "the authors (AdaptSegNet issue #22): a discriminator loss 'within a range around 0.2~0.5 is reasonable'; "
         "broken below {} (half of 0.2) with the adversarial loss above {:.2f} (-ln 0.1) over a trailing {}-iteration "
         "mean, for at least {} iterations (--gan Vanilla only: the authors' range is for BCE)".format(
             COLLAPSED_D, EXPLODED_ADV, WINDOW, COLLAPSED_FOR)),
    Rule("segmentation_not_decreasing",
         "the segmentation loss has not decreased since the start: the network is not learning its source labels "
         "(learning rate, labels or weights to check)",
         "a choice of this project, not a measurement: after {} iterations (one snapshot interval at the default "
         "--save-pred-every) the trailing {}-iteration mean is not below the mean of the first {} "
         "iterations".format(SEG_AFTER, WINDOW, WINDOW)),
    Rule("miou_falling_late",
         "late in the run the mIoU fell far below its best: report the best snapshot, and consider stopping "
         "earlier",
         "more than {:.0f} points below the best so far (users report swings of 1-3 points between snapshots: issue "
         "29), in the last third of the run".format(MIOU_DROP * 100)),
    Rule("loss_scale_collapse",
         "the fp16 loss scale collapsed: gradients overflow float16 even unscaled, so steps are being skipped "
         "(use --amp bf16 or --amp off)",
         "the dynamic loss scale starts at 2^15 and halves at each overflow (utils/training/amp.py); below {:.0f} the "
         "gradients overflow unscaled (NVIDIA's mixed-precision training guide)".format(MIN_LOSS_SCALE)),
)
RULE = {rule.name: rule for rule in RULES}


class Finding(NamedTuple):
    rule: str
    tag: str        # the curve that breaks it
    ranges: list    # [(first iteration, last iteration)] where it does


def _arrays(curve):
    steps, values = curve
    return np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)


def trailing_mean(steps, values, window=WINDOW):
    """At each logged step s, the mean of the values logged at steps in (s - window, s]."""
    steps, values = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    total = np.concatenate([[0.0], np.cumsum(values)])
    first = np.searchsorted(steps, steps - window, side="right")
    last = np.arange(1, len(steps) + 1)
    return (total[last] - total[first]) / (last - first)


def ranges_of(steps, flags, min_length=0):
    """The maximal runs of consecutive flagged steps as (first step, last step), those spanning at
    least ``min_length`` iterations."""
    steps = np.asarray(steps)
    edges = np.diff(np.concatenate([[0], np.asarray(flags, dtype=np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    return [(int(steps[a]), int(steps[b])) for a, b in zip(starts, stops) if steps[b] - steps[a] >= min_length]


def _at_chance(curves, gan):
    chance = CHANCE.get(gan)
    for d_tag, _ in ADVERSARIAL_PAIRS:
        if d_tag in curves and chance is not None:
            steps, values = _arrays(curves[d_tag])
            yield d_tag, ranges_of(steps, np.abs(trailing_mean(steps, values) - chance) < PINNED_TOLERANCE,
                                   PINNED_FOR)


def _collapse(curves, gan):
    if gan != "Vanilla":
        return
    for d_tag, adv_tag in ADVERSARIAL_PAIRS:
        if d_tag in curves and adv_tag in curves:
            steps, d_values = _arrays(curves[d_tag])
            adv_steps, adv_values = _arrays(curves[adv_tag])
            if len(adv_steps) != len(steps) or np.any(adv_steps != steps):
                continue  # logged together by every method; anything else is not a pair
            flags = (trailing_mean(steps, d_values) < COLLAPSED_D) & (trailing_mean(steps, adv_values) > EXPLODED_ADV)
            yield d_tag + " with " + adv_tag, ranges_of(steps, flags, COLLAPSED_FOR)


def _segmentation(curves):
    for tag in curves:
        if tag.startswith("loss/seg"):
            steps, values = _arrays(curves[tag])
            if not len(steps):
                continue
            start = values[steps < steps[0] + WINDOW].mean()
            flags = (steps >= steps[0] + SEG_AFTER) & (trailing_mean(steps, values) >= start)
            yield tag, ranges_of(steps, flags)


def _miou(curves, end):
    if MIOU not in curves:
        return
    steps, values = _arrays(curves[MIOU])
    order = np.argsort(steps, kind="stable")
    steps, values = steps[order], values[order]
    end = end if end is not None else (steps[-1] if len(steps) else 0)
    flags = (steps > LATE * end) & (values < np.maximum.accumulate(values) - MIOU_DROP)
    yield MIOU, ranges_of(steps, flags)


def _loss_scale(curves):
    if LOSS_SCALE in curves:
        steps, values = _arrays(curves[LOSS_SCALE])
        yield LOSS_SCALE, ranges_of(steps, values < MIN_LOSS_SCALE)


def check(curves, gan="Vanilla", end=None):
    """The Findings of a run's ``curves`` (``{tag: (steps, values)}``, steps increasing; ``val/mIoU``
    for the mIoU rule) whose rules break somewhere. ``gan``: the run's --gan; ``end``: its last
    planned iteration (--num-steps-stop; default: the last logged), which says what is late."""
    checks = (("discriminator_at_chance", _at_chance(curves, gan)), ("discriminator_collapse", _collapse(curves, gan)),
              ("segmentation_not_decreasing", _segmentation(curves)), ("miou_falling_late", _miou(curves, end)),
              ("loss_scale_collapse", _loss_scale(curves)))
    return [Finding(rule, tag, ranges) for rule, found in checks for tag, ranges in found if ranges]


def gan_of(settings):
    """The GAN loss of a run's settings (a namespace or a dict): --gan, or the weak-label method's
    --ls-gan."""
    get = settings.get if isinstance(settings, dict) else lambda name, default=None: getattr(settings, name, default)
    return "LS-sigmoid" if get("ls_gan", False) else get("gan", "Vanilla")


def describe_ranges(ranges):
    return ", ".join(str(a) if a == b else "{}-{}".format(a, b) for a, b in ranges)


def warning_line(finding, ranges=None):
    return "health warning: {} ({}, iterations {}; README: Reading a run)".format(
        RULE[finding.rule].sentence, finding.tag, describe_ranges(ranges or finding.ranges))


class HealthMonitor(object):
    """The rules applied while a run trains: ``observe(records)`` takes the run's log records so far
    (TrainLog.records: {"step", "scalars"}, in order; only the new ones are read) and returns the
    warning lines of episodes that started since the last call, each once. The rules are checked
    every ``check_every`` iterations and at each new mIoU."""

    def __init__(self, gan="Vanilla", end=None, check_every=100):
        self.gan, self.end, self.check_every = gan, end, check_every
        self._curves, self._seen, self._warned, self._next_check = {}, 0, set(), 0

    def observe(self, records):
        new = records[self._seen:]
        self._seen = len(records)
        for record in new:
            for tag, value in record["scalars"].items():
                steps, values = self._curves.setdefault(tag, ([], []))
                steps.append(record["step"])
                values.append(value)
        if not new or (new[-1]["step"] < self._next_check and not any(MIOU in r["scalars"] for r in new)):
            return []
        self._next_check = new[-1]["step"] + self.check_every
        lines = []
        for finding in check(self._curves, self.gan, self.end):
            for first, last in finding.ranges:
                if (finding.rule, finding.tag, first) not in self._warned:
                    self._warned.add((finding.rule, finding.tag, first))
                    lines.append(warning_line(finding, [(first, last)]))
        return lines
