"""The health rules of utils/health.py on synthetic curves: each broken where it should be, silent
on a healthy run; and training's monitor warns once per episode."""
import math

import numpy as np
import pytest

from utils import health

END = 150000
STEPS = np.arange(10, END + 1, 10)  # logged every 10 iterations, as a long run might
rng = np.random.default_rng(0)


def noisy(values, scale=0.02):
    return list(np.asarray(values, dtype=np.float64) + rng.normal(0.0, scale, len(values)))


def healthy_curves():
    """What the authors describe: seg falls, D settles in 0.2~0.5, adv rises gently, mIoU climbs and
    swings by about a point."""
    fraction = STEPS / END
    curves = {
        "loss/seg1": noisy(1.2 * np.exp(-STEPS / 4000.0) + 0.5),
        "loss/seg2": noisy(1.6 * np.exp(-STEPS / 4000.0) + 0.3),
        "loss/D1": noisy(0.45 - 0.1 * fraction, 0.05), "loss/D2": noisy(0.40 - 0.1 * fraction, 0.05),
        "loss/adv_target1": noisy(0.8 + 0.4 * fraction, 0.1), "loss/adv_target2": noisy(0.9 + 0.5 * fraction, 0.1),
        "amp/loss_scale": list(np.full(len(STEPS), 32768.0)),
    }
    curves = {tag: (list(STEPS), values) for tag, values in curves.items()}
    snapshots = list(range(5000, END + 1, 5000))
    curves[health.MIOU] = (snapshots, [0.42 * (1 - math.exp(-s / 30000.0)) + 0.01 * math.sin(s / 7000.0)
                                       for s in snapshots])
    return curves


def rules_broken(curves, gan="Vanilla"):
    return {(f.rule, f.tag): f.ranges for f in health.check(curves, gan, END)}


def test_a_healthy_run_breaks_no_rule():
    assert health.check(healthy_curves(), "Vanilla", END) == []


def test_discriminator_pinned_at_ln2_for_thousands_of_iterations():
    curves = healthy_curves()
    values = np.asarray(curves["loss/D2"][1])
    pinned = (STEPS > 20000) & (STEPS <= 30000)
    values[pinned] = math.log(2) + rng.normal(0, 0.002, pinned.sum())
    curves["loss/D2"] = (curves["loss/D2"][0], list(values))
    broken = rules_broken(curves)
    assert list(broken) == [("discriminator_at_chance", "loss/D2")]
    (first, last), = broken[("discriminator_at_chance", "loss/D2")]
    # the trailing mean reaches ln 2 within one window, and leaves it within one
    assert 20000 < first <= 21000 and 30000 <= last <= 31000

    short = healthy_curves()  # a few hundred iterations at chance is no episode
    values = np.asarray(short["loss/D2"][1])
    values[(STEPS > 20000) & (STEPS <= 21500)] = math.log(2)
    short["loss/D2"] = (short["loss/D2"][0], list(values))
    assert rules_broken(short) == {}


def test_least_squares_chance_is_a_quarter():
    curves = healthy_curves()
    curves["loss/D1"] = (curves["loss/D1"][0], list(np.full(len(STEPS), 0.25)))
    assert ("discriminator_at_chance", "loss/D1") in rules_broken(curves, "LS")
    assert ("discriminator_at_chance", "loss/D1") not in rules_broken(curves, "Vanilla")


def test_discriminator_collapse_with_exploding_adversarial_loss():
    curves = healthy_curves()
    late = STEPS > 100000
    d, adv = np.asarray(curves["loss/D1"][1]), np.asarray(curves["loss/adv_target1"][1])
    d[late], adv[late] = 0.02, 6.0
    curves["loss/D1"], curves["loss/adv_target1"] = (list(STEPS), list(d)), (list(STEPS), list(adv))
    broken = rules_broken(curves)
    assert list(broken) == [("discriminator_collapse", "loss/D1 with loss/adv_target1")]
    (first, last), = broken[("discriminator_collapse", "loss/D1 with loss/adv_target1")]
    assert 100000 < first <= 101000 and last == END

    only_d = healthy_curves()  # a confident discriminator alone, the adversarial loss still low, is not it
    only_d["loss/D1"] = (list(STEPS), list(np.where(late, 0.02, np.asarray(only_d["loss/D1"][1]))))
    assert rules_broken(only_d) == {}


def test_a_segmentation_loss_that_does_not_decrease():
    curves = healthy_curves()
    curves["loss/seg2"] = (list(STEPS), noisy(np.full(len(STEPS), 2.9), 0.05))
    broken = rules_broken(curves)
    assert list(broken) == [("segmentation_not_decreasing", "loss/seg2")]
    assert broken[("segmentation_not_decreasing", "loss/seg2")][0][0] >= 5010


def test_miou_falling_far_below_its_best_late():
    curves = healthy_curves()
    snapshots, mious = curves[health.MIOU]
    mious = [m - (0.06 if s >= 120000 else 0.0) for s, m in zip(snapshots, mious)]
    curves[health.MIOU] = (snapshots, mious)
    assert rules_broken(curves) == {("miou_falling_late", health.MIOU): [(120000, END)]}

    early = healthy_curves()  # the same fall early in the run is not late
    snapshots, mious = early[health.MIOU]
    early[health.MIOU] = (snapshots, [m - (0.06 if 20000 <= s <= 40000 else 0.0) for s, m in zip(snapshots, mious)])
    assert rules_broken(early) == {}


def test_fp16_loss_scale_collapse():
    curves = healthy_curves()
    scale = np.full(len(STEPS), 32768.0)
    scale[(STEPS >= 50000) & (STEPS <= 52000)] = 0.25
    curves["amp/loss_scale"] = (list(STEPS), list(scale))
    assert rules_broken(curves) == {("loss_scale_collapse", "amp/loss_scale"): [(50000, 52000)]}


def test_every_rule_says_where_its_threshold_comes_from():
    for rule in health.RULES:
        assert len(rule.sentence) > 40 and len(rule.source) > 40, rule.name


def records_of(curves):
    by_step = {}
    for tag, (steps, values) in curves.items():
        for step, value in zip(steps, values):
            by_step.setdefault(int(step), {})[tag] = value
    return [{"step": step, "scalars": by_step[step]} for step in sorted(by_step)]


def test_training_warns_once_per_episode_and_not_for_a_healthy_run():
    curves = healthy_curves()
    d = np.asarray(curves["loss/D2"][1])
    episodes = ((STEPS > 20000) & (STEPS <= 30000)) | ((STEPS > 60000) & (STEPS <= 70000))
    d[episodes] = math.log(2)
    curves["loss/D2"] = (list(STEPS), list(d))
    records = records_of(curves)

    monitor, lines, log = health.HealthMonitor("Vanilla", END, check_every=3000), [], []
    for index in range(0, len(records), 10):  # as training hands it its growing log
        log.extend(records[index:index + 10])
        lines += monitor.observe(log)
    assert len(lines) == 2 and all(line.startswith("health warning: the discriminator loss stays") for line in lines)
    assert "loss/D2" in lines[0] and "README: Reading a run" in lines[0]

    quiet = health.HealthMonitor("Vanilla", END, check_every=3000)
    healthy = records_of(healthy_curves())
    log = []
    for index in range(0, len(healthy), 50):
        log.extend(healthy[index:index + 50])
        assert quiet.observe(log) == []
    assert quiet._seen == len(healthy)


def test_trailing_mean_and_ranges():
    np.testing.assert_allclose(health.trailing_mean([1, 2, 3, 10], [1.0, 2.0, 3.0, 4.0], window=2),
                               [1.0, 1.5, 2.5, 4.0])
    assert health.ranges_of([1, 2, 3, 4, 5], [True, True, False, True, True], min_length=1) == [(1, 2), (4, 5)]
    assert health.ranges_of([1, 2, 3], [True, False, True], min_length=1) == []


@pytest.mark.parametrize("settings, gan", [({"gan": "LS"}, "LS"), ({"ls_gan": True}, "LS-sigmoid"), ({}, "Vanilla")])
def test_the_gan_loss_of_a_run(settings, gan):
    assert health.gan_of(settings) == gan
