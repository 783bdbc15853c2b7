"""The authors' ``.pth`` files, found where AI Studio mounts them and converted to ``.pdparams`` once."""
import glob
import os

from dataset.files import summarize
from notebooks.aistudio.commands import run


def find_file(directory, pattern, what, url=None):
    """The first file matching ``pattern`` below ``directory``; else ``url`` if given (the converter
    downloads it once into a cache: utils/files/download.py); else FileNotFoundError listing the
    .pth files there."""
    matches = sorted(glob.glob(os.path.join(directory, pattern), recursive=True))
    if not matches and url:
        print("{}: not among the project's datasets; it will be downloaded from {}".format(what, url))
        return url
    if not matches:
        present = sorted(os.path.relpath(p, directory)
                         for p in glob.glob(os.path.join(directory, "**", "*.pth"), recursive=True))
        raise FileNotFoundError("{}: no file matches {}; .pth files under {}: {}. Upload it to the project as a "
                                "dataset file, or fix the pattern in the parameters cell.".format(
                                    what, os.path.join(directory, pattern), directory, summarize(present) or "none"))
    return matches[0]


def convert_weights(source, target, model="DeeplabMulti", check_hash=True):
    """``python -m utils.convert_weights SOURCE TARGET --model MODEL``, unless TARGET exists;
    ``check_hash=False`` adds ``--no-hash-check`` (DEMO's stand-ins carry the authors' names, not their bytes)."""
    if os.path.isfile(target):
        print("{} exists: already converted (delete it to convert again)".format(target))
        return target
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    run(["-m", "utils.convert_weights", source, target, "--model", model] + ([] if check_hash else ["--no-hash-check"]))
    return target
