"""Recipes: the complete configurations of a training script that have been run to a published
number, by name (``--recipe``).

Two runs are known to reach AdaptSegNet's accuracy, and they differ in batch size, BatchNorm,
the segmentation network's SGD and the end of the learning-rate schedule:

- ``authors``: the authors' PyTorch code (wasidennis/AdaptSegNet, ``train_gta2cityscapes_multi.py``):
  batch 1; ``model.train()``, so BN normalises with batch statistics and moves its running ones;
  SGD over ``optim_parameters()`` with most backbone parameters listed 3-4 times (PyTorch 0.4
  applied every entry) and the classifiers at 10x; poly decay to 0 for G and the discriminators.
- ``paddle-port``: the published Paddle reproduction: batch 2; BN statistics frozen; one
  ``Momentum`` over ``model.parameters()`` (every parameter once, classifiers 1x); Paddle's
  ``PolynomialDecay`` with its default ``end_lr=1e-4``, so G decays from 2.5e-4 toward 1e-4 and
  the discriminators' 1e-4 stays constant.
- ``paper``: the optimizer as the paper writes it (backbone at the base rate, classifiers 10x,
  each parameter once); what the paper leaves unsaid (batch, BN) as the authors' code ran it.

Every value of a recipe is a flag of the script: a flag given on the command line overrides it.
The resolved values are part of every snapshot, and a continued run takes them from there (see
``adopt_snapshot_settings``), so a run continues as it started whatever the default is now.
"""
import collections

Recipe = collections.namedtuple("Recipe", "values provenance published")


def _values(batch_size, bn, sgd_groups, end_learning_rate, losses):
    """{flag's dest: value}: what differs between recipes, the schedule all share, the loss weights."""
    values = collections.OrderedDict([("batch_size", batch_size), ("bn", bn), ("sgd_groups", sgd_groups),
                                      ("learning_rate", 2.5e-4), ("learning_rate_D", 1e-4),
                                      ("end_learning_rate", end_learning_rate), ("power", 0.9), ("num_steps", 250000),
                                      ("momentum", 0.9), ("weight_decay", 5e-4)])
    values.update(losses)
    return values


_LOSSES = [("lambda_seg", 0.1), ("lambda_adv_target1", 2e-4), ("lambda_adv_target2", 1e-3)]
ADAPTSEGNET = collections.OrderedDict([
    ("paddle-port", Recipe(_values(2, "frozen", "single", 1e-4, _LOSSES), "the published Paddle reproduction",
                           "42.35 mIoU at 150k iterations, best snapshot 42.72 (110k)")),
    ("authors", Recipe(_values(1, "train", "original", 0.0, _LOSSES), "the authors' PyTorch code",
                       "42.4 mIoU (paper); the released model evaluates to 42.35")),
    ("paper", Recipe(_values(1, "train", "paper", 0.0, _LOSSES), "the paper's text",
                     "none: nobody has published this run")),
])

# The weak-label reference (sujoyp/weak-da-seg) trains as AdaptSegNet's code does; its scripts set
# these loss weights in every mode.
_WEAK_LOSSES = [("lambda_adv_target2", 1e-3), ("lambda_weak_target2", 0.01), ("lambda_weak_cwadv2", 1e-3)]
WEAK_LABELS = collections.OrderedDict([
    ("authors", Recipe(_values(1, "train", "original", 0.0, _WEAK_LOSSES), "the weak-da-seg scripts",
                       "48.2 (UDA), 53.0 (image labels), 56.4 (points) mIoU")),
    ("paddle-port", Recipe(_values(2, "frozen", "single", 1e-4, _WEAK_LOSSES),
                           "the Paddle port's batch, BN and optimizer", "none: the port did not train this method")),
    ("paper", Recipe(_values(1, "train", "paper", 0.0, _WEAK_LOSSES), "the papers' text",
                     "none: nobody has published this run")),
])

# What snapshots written before a setting existed were trained with.
EARLIER_VALUES = {"recipe": None, "bn": "frozen", "end_learning_rate": 0.0, "sgd_groups": "paper"}


def flag(field):
    return "--" + field.replace("_", "-")


def apply_recipe(args, recipes, default):
    """Fill every recipe value that the command line left unset (None) from ``--recipe`` (or
    ``default``). ``args.explicit`` lists what the command line did set ("recipe" included)."""
    args.explicit = ["recipe"] if args.recipe is not None else []
    args.recipe = args.recipe or default
    for field, value in recipes[args.recipe].values.items():
        if getattr(args, field) is None:
            setattr(args, field, value)
        else:
            args.explicit.append(field)
    return args


def adopt_snapshot_settings(args, recipes, saved):
    """A run continued without --recipe takes the recipe and its values from the snapshot's
    settings ``saved``, except flags given on the command line (the session checks those against
    the snapshot, as it checks every value of a --recipe given). Returns a line for the log."""
    if "recipe" in args.explicit:
        return None
    fields = ["recipe"] + list(next(iter(recipes.values())).values)
    adopted = {}
    for field in fields:
        if field not in args.explicit and (field in saved or field in EARLIER_VALUES):
            adopted[field] = saved[field] if field in saved else EARLIER_VALUES[field]
    changed = {field: value for field, value in adopted.items() if getattr(args, field) != value}
    for field, value in adopted.items():
        setattr(args, field, value)
    if args.recipe is None:
        return "the snapshot predates recipes: the run continues with its own settings ({})".format(
            describe_values(args, fields[1:]))
    if changed:
        return "settings from the snapshot: {}".format(", ".join(
            "{} {}".format(flag(field), value) for field, value in changed.items()))
    return None


def describe_values(args, fields):
    return ", ".join("{} {}".format(flag(field), getattr(args, field)) for field in fields)


def describe_recipe(args, recipes):
    """The log's first line: the recipe, where it comes from, its published number, the overrides."""
    if args.recipe is None:
        return None  # the snapshot's settings are logged as adopted
    recipe = recipes[args.recipe]
    line = "recipe {} ({}; published: {}): {}".format(args.recipe, recipe.provenance, recipe.published,
                                                      describe_values(args, recipe.values))
    overrides = {field: getattr(args, field) for field in recipe.values if getattr(args, field) != recipe.values[field]}
    if overrides:
        line += "; overridden: " + ", ".join("{} {}".format(flag(f), v) for f, v in overrides.items())
    return line
