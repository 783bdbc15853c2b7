"""Argument types shared by the command lines."""
import argparse


def size_argument(text):
    """'WIDTH,HEIGHT' -> (width, height), as the original's --input-size flags."""
    try:
        width, height = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("expected WIDTH,HEIGHT such as 1024,512, got {!r}".format(text))
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError("expected positive WIDTH,HEIGHT, got {!r}".format(text))
    return width, height


def given_value(argv, flag):
    """The value of ``flag`` in ``argv`` (default sys.argv[1:]) before the whole command line is
    parsed: a config file whose values become the other flags' defaults."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument(flag, default=None)
    return parser.parse_known_args(argv)[0].__dict__[flag.lstrip("-").replace("-", "_")]


def add_model_weights_argument(parser):
    """--model-weights of evaluation's and prediction's ensembles (model.inference.WeightedSum)."""
    parser.add_argument("--model-weights", type=float, nargs="+", default=None, metavar="W",
                        help="with several --restore-from: each one's weight in the ensemble (default: equal, "
                             "summing to 1; ADVENT's is 0.5 0.5)")
