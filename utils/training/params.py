"""Hyper-parameters, each declared once, and the frozen settings of a run.

A ``Param`` is one setting that changes what a run computes: its flag, its help, its value (one,
or one per recipe) and whether a continued run must keep it. The engine declares those every
method shares (options.py: data, schedule, optimizer); a method declares its own in its file.
From the declarations come the flags (``add_params``), the recipe tables (``recipe_values``), the
log's recipe line (``describe_recipe``), the settings a continued run adopts from its snapshot
(``adopt_snapshot_settings``) and the values it must keep (``kept_values``).

A recipe is a complete configuration that has been run to a published number, by name
(``--recipe``; README: Which recipe). Two runs are known to reach AdaptSegNet's accuracy, and they
differ in batch size, BatchNorm, the segmentation network's SGD and the end of the schedule:

- ``authors``: the authors' PyTorch code (wasidennis/AdaptSegNet): batch 1; ``model.train()``, so BN
  normalises with batch statistics and moves its running ones; SGD over ``optim_parameters()`` with
  most backbone parameters listed 3-4 times (PyTorch 0.4 applied every entry) and the classifiers
  at 10x; poly decay to 0 for G and the discriminators.
- ``paddle-port``: the published Paddle reproduction: batch 2; BN statistics frozen; one
  ``Momentum`` over ``model.parameters()`` (every parameter once, classifiers 1x); Paddle's
  ``PolynomialDecay`` with its default ``end_lr=1e-4``, so G decays from 2.5e-4 toward 1e-4 and
  the discriminators' 1e-4 stays constant.
- ``paper``: the optimizer as the paper writes it (backbone at the base rate, classifiers 10x, each
  parameter once); what the paper leaves unsaid (batch, BN) as the authors' code ran it.

A flag given on the command line overrides its recipe's value. The resolved values are part of
every snapshot, and a continued run takes them from there, so a run continues as it started
whatever the defaults are now.
"""
import argparse
import collections


class Recipe(collections.namedtuple("Recipe", "name provenance published schedule")):
    """A named configuration: where it comes from and what it reached. The shared hyper-parameters
    (options.SHARED_PARAMS) know the recipes paddle-port, authors and paper; a method's own recipe
    takes theirs from the one it names as ``schedule``."""

    def __new__(cls, name, provenance, published, schedule=None):
        return super().__new__(cls, name, provenance, published, schedule or name)

    def value_of(self, param):
        return param.value[self.name] if self.name in param.value else param.value[self.schedule]


# The value of a Param for snapshots written before it existed: none (they cannot have differed).
NOT_RECORDED = object()


def flag(name):
    return "--" + name.replace("_", "-")


class Param(object):
    """One hyper-parameter. ``value``: its default, or {recipe name: value} when recipes set it
    (then the flag defaults to the recipe's); ``keep``: a continued run must keep it; ``earlier``:
    its value in snapshots written before it existed; ``aliases`` and ``**flag``: argparse's."""

    def __init__(self, name, value, help, keep=True, earlier=NOT_RECORDED, aliases=(), **flag):
        self.name, self.value, self.help, self.keep, self.earlier = name, value, help, keep, earlier
        self.aliases, self.flag = tuple(aliases), flag

    @property
    def by_recipe(self):
        return isinstance(self.value, dict)

    def add_to(self, parser, recipes):
        kwargs = dict(self.flag)
        help_text = self.help
        if self.by_recipe:
            kwargs["default"] = None
            help_text += " (recipe {})".format(", ".join("{}: {}".format(r.name, r.value_of(self)) for r in recipes))
        elif kwargs.get("action") != "store_true":
            kwargs["default"] = self.value
        parser.add_argument(flag(self.name), *self.aliases, dest=self.name, help=help_text, **kwargs)


def same_in(recipes, value):
    """{recipe name: value} of a hyper-parameter that every recipe sets alike (a loss weight)."""
    return collections.OrderedDict((r.name, value) for r in recipes)


def add_params(parser, params, recipes, default_recipe):
    parser.add_argument("--recipe", default=None, choices=[r.name for r in recipes],
                        help="a complete, named configuration: {} (default {}); flags given explicitly override "
                             "its values (README: Which recipe)".format(
                                 "; ".join("{}: {}".format(r.name, r.provenance) for r in recipes), default_recipe))
    for param in params:
        param.add_to(parser, recipes)


def recipe_values(params, recipe):
    """{name: value} of what ``recipe`` (a Recipe) sets."""
    return collections.OrderedDict((p.name, recipe.value_of(p)) for p in params if p.by_recipe)


def named(recipes, name):
    return next(r for r in recipes if r.name == name)


def apply_recipe(args, params, recipes, default_recipe):
    """Fill every recipe value that the command line left unset (None) from ``--recipe`` (or
    ``default_recipe``). ``args.explicit`` lists what the command line did set ("recipe" included)."""
    args.explicit = ["recipe"] if args.recipe is not None else []
    args.recipe = args.recipe or default_recipe
    for name, value in recipe_values(params, named(recipes, args.recipe)).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
        else:
            args.explicit.append(name)
    return args


def adopt_snapshot_settings(args, params, saved):
    """A run continued without --recipe takes the recipe and its values from the snapshot's
    settings ``saved``, except flags given on the command line (the session checks those against
    the snapshot, as it checks every value of a --recipe given). Returns a line for the log."""
    if "recipe" in args.explicit:
        return None
    by_recipe = [p for p in params if p.by_recipe]
    adopted = {}
    for param in [Param("recipe", None, "", earlier=None)] + by_recipe:
        if param.name in args.explicit:
            continue
        if param.name in saved:
            adopted[param.name] = saved[param.name]
        elif param.earlier is not NOT_RECORDED:
            adopted[param.name] = param.earlier
    changed = {name: value for name, value in adopted.items() if getattr(args, name) != value}
    for name, value in adopted.items():
        setattr(args, name, value)
    if args.recipe is None:
        return "the snapshot predates recipes: the run continues with its own settings ({})".format(
            describe_values(args, [p.name for p in by_recipe]))
    if changed:
        return "settings from the snapshot: {}".format(", ".join(
            "{} {}".format(flag(name), value) for name, value in changed.items()))
    return None


def describe_values(args, names):
    return ", ".join("{} {}".format(flag(name), getattr(args, name)) for name in names)


def describe_recipe(args, params, recipes):
    """The log's first line: the recipe, where it comes from, its published number, the overrides."""
    if args.recipe is None:
        return None  # the snapshot's settings are logged as adopted
    recipe = named(recipes, args.recipe)
    values = recipe_values(params, recipe)
    line = "recipe {} ({}; published: {}): {}".format(recipe.name, recipe.provenance, recipe.published,
                                                      describe_values(args, values))
    overrides = {name: getattr(args, name) for name in values if getattr(args, name) != values[name]}
    if overrides:
        line += "; overridden: " + ", ".join("{} {}".format(flag(n), v) for n, v in overrides.items())
    return line


def kept_values(args, params):
    """{name: value} of what a continued run must keep, the recipe's name included."""
    kept = collections.OrderedDict(recipe=args.recipe)
    kept.update((p.name, getattr(args, p.name)) for p in params if p.keep)
    return kept


def earlier_values(params):
    """{name: value} that snapshots written before a setting existed were trained with."""
    earlier = {"recipe": None}
    earlier.update((p.name, p.earlier) for p in params if p.earlier is not NOT_RECORDED)
    return earlier


class Settings(argparse.Namespace):
    """The resolved settings of a run: filled by parsing, the recipe and (for a continued run) the
    snapshot, then frozen, so that every value has one place where it was set."""

    def __setattr__(self, name, value):
        if vars(self).get("_frozen"):
            raise AttributeError("the run's settings are frozen once resolved; {} cannot change".format(flag(name)))
        super().__setattr__(name, value)

    def freeze(self):
        object.__setattr__(self, "_frozen", True)
        return self

    def record(self):
        """Every setting as plain values (saved whole with each snapshot)."""
        record = {name: value for name, value in vars(self).items() if name != "_frozen"}
        if "class_set" in record:
            record["class_set"] = list(record["class_set"].names)
        return record
