"""The training methods, one file each, on the engine of utils/training/ (method.py says what a
method defines). ``METHODS`` names them for ``python -m utils.methods NAME [flags]``; a new
method is one file here and one line there."""
import importlib

METHODS = {
    "adaptsegnet": "utils.methods.adaptsegnet:AdaptSegNet",  # --source-only: source_only.py
    "weak-labels": "utils.methods.weak_labels:WeakLabels",
    "advent": "utils.methods.advent:Advent",  # MinEnt and AdvEnt: --da-method
}


def method_class(name):
    module, _, attribute = METHODS[name].partition(":")
    return getattr(importlib.import_module(module), attribute)
