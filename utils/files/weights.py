"""The one weight loader: `.pdparams` or the authors' PyTorch `.pth`, checked key by key.

Paddle's ``set_state_dict`` only warns about missing or mis-shaped keys, which turns a wrong
file into a silently untrained network. Everything here refuses instead, naming the keys.
"""
import collections
import hashlib
import os
import pickle
import re

import numpy as np

from utils.files.torch_pickle import TorchFileError, UnsafePickleError, load_torch_file
from utils.runtime import SELF_TEST_VARIABLE, self_test_network

# PyTorch BN buffer name -> Paddle BN buffer name.
_BN_BUFFER_RENAMES = {"running_mean": "_mean", "running_var": "_variance"}
_TORCH_NAMES = {paddle_name: torch_name for torch_name, paddle_name in _BN_BUFFER_RENAMES.items()}
_DROPPED_SUFFIX = "num_batches_tracked"
# The ImageNet/COCO-initialised DeepLab file (DeepLab_resnet_pretrained_init-*.pth) prefixes
# every key with this.
INIT_FILE_PREFIX = "Scale."
CLASSIFIER_PREFIXES = ("layer5.", "layer6.")
# torch.hub names a download <name>-<first hex digits of its SHA-256>.<ext> and checks it against
# them (check_hash); the authors' files are named so: GTA2Cityscapes_multi-ed35151c.pth.
_HASH_SUFFIX = re.compile(r"-([0-9a-f]{8,64})(\.[A-Za-z0-9_]+)+$")
_HASH_CHUNK = 1 << 20  # the files are ~170 MB: hashed a MiB at a time
_digests_by_file = {}  # (real path, size, mtime, algorithm) -> hex digest: each file is hashed once per process


class WeightsError(ValueError):
    """A weights file that does not fit the model; the message names the file and the keys."""


class LoadReport(object):
    """What a conversion or load did: for the log and for the caller's decisions."""

    def __init__(self, path, kind, params, skipped, fresh, hash_prefix=None):
        self.path = path
        self.kind = kind          # "init" (Scale.-prefixed backbone file), "pytorch" or "paddle"
        self.params = params      # {paddle name: float32 ndarray} that were loaded
        self.skipped = skipped    # [(key in the file, why it was not loaded)]
        self.fresh = fresh        # parameter prefixes absent from the file, left at fresh init
        self.hash_prefix = hash_prefix  # the name's SHA-256 prefix, checked; None if not checked

    def summary(self):
        lines = ["{}: {} tensors loaded ({}{})".format(self.path, len(self.params), {
            "init": "ImageNet/COCO-initialised DeepLab backbone, 'Scale.' prefix removed",
            "pytorch": "PyTorch state dict",
            "paddle": "Paddle state dict",
        }[self.kind], "; sha256 prefix checked" if self.hash_prefix else "")]
        reasons = collections.OrderedDict()
        for key, why in self.skipped:
            reasons.setdefault(why, []).append(key)
        lines += ["  skipped {}: {}".format(keys[0] if len(keys) == 1 else "{} keys (e.g. {})".format(len(keys), keys[0]),
                                           why) for why, keys in reasons.items()]
        lines += ["  not in the file, left at fresh initialisation: {}*".format(p) for p in self.fresh]
        return "\n".join(lines)


def _shorten(keys, limit=12):
    """All keys when few; otherwise one entry per top-level module, so no module goes unnamed."""
    keys = sorted(keys)
    if len(keys) <= limit:
        return ", ".join(keys)
    modules = collections.OrderedDict()
    for key in keys:
        modules.setdefault(key.split(".")[0], []).append(key)
    return ", ".join(members[0] if len(members) == 1 else "{}.* ({} keys, e.g. {})".format(
        module, len(members), members[0]) for module, members in modules.items())


def _unwrap(obj, path):
    """The flat name -> array dict inside a loaded file."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise WeightsError("{}: holds no state dict (a mapping of parameter names to tensors)".format(path))
    not_arrays = [k for k, v in obj.items() if not isinstance(v, np.ndarray)]
    if not_arrays:
        raise WeightsError("{}: these entries are not tensors: {}".format(path, _shorten(map(str, not_arrays))))
    if all(k.startswith("module.") for k in obj):  # saved from nn.DataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def torch_to_paddle(torch_state, path, expected_shapes):
    """Rename a PyTorch state dict to Paddle names; returns ``(params, skipped, kind)``.

    Keys with no Paddle counterpart are skipped with a reason. The init file's ``layer5`` is a
    classifier for another class count; the reference does not copy it when training for 19
    classes, so it is skipped whenever its shapes do not fit the model. A 2-D ``weight`` is a
    Linear layer's (every other weight here is a conv's, 4-D): PyTorch stores it (out, in),
    Paddle (in, out), so it is transposed.
    """
    kind = "pytorch"
    if all(k.startswith(INIT_FILE_PREFIX) for k in torch_state):
        kind = "init"
        torch_state = {k[len(INIT_FILE_PREFIX):]: v for k, v in torch_state.items()}
    params, skipped = {}, []
    for key, value in torch_state.items():
        key_in_file = INIT_FILE_PREFIX + key if kind == "init" else key
        module, _, leaf = key.rpartition(".")
        if leaf == _DROPPED_SUFFIX:
            skipped.append((key_in_file, "PyTorch's BN step counter has no Paddle counterpart"))
            continue
        name = module + "." + _BN_BUFFER_RENAMES.get(leaf, leaf) if module else key
        if kind == "init" and name.startswith("layer5.") and \
                expected_shapes.get(name) != tuple(value.shape):
            skipped.append((key_in_file, "classifier of the init file for another class "
                            "count ({}); the reference trains it from scratch".format(value.shape[0])))
            continue
        params[name] = np.ascontiguousarray(value.T) if leaf == "weight" and value.ndim == 2 else value
    return params, skipped, kind


def as_torch_state(paddle_state):
    """A Paddle state dict as the reference would save it: {PyTorch name: float32 ndarray}, Linear
    weights (out, in)."""
    renamed = {}
    for name, value in paddle_state.items():
        module, _, leaf = name.rpartition(".")
        value = np.asarray(value, dtype=np.float32)
        renamed[module + "." + _TORCH_NAMES.get(leaf, leaf) if module else leaf] = \
            value.T if leaf == "weight" and value.ndim == 2 else value
    return renamed


def check_against_model(params, expected, path, allow_fresh=()):
    """Refuse unexpected, mis-shaped or missing keys; returns the prefixes left fresh.

    A prefix in ``allow_fresh`` may be absent as a whole (e.g. the classifiers when training
    starts from the init file), never in part.
    """
    unexpected = set(params) - set(expected)
    mismatched = ["{} (file {}, model {})".format(k, tuple(params[k].shape), expected[k])
                  for k in sorted(set(params) & set(expected)) if tuple(params[k].shape) != expected[k]]
    missing = set(expected) - set(params)
    fresh = []
    for prefix in allow_fresh:
        wanted = {k for k in expected if k.startswith(prefix)}
        if wanted and wanted <= missing:
            missing -= wanted
            fresh.append(prefix)
    problems = []
    if missing:
        problems.append("missing from the file: " + _shorten(missing))
    if mismatched:
        problems.append("wrong shape: " + _shorten(mismatched))
    if unexpected:
        problems.append("not in the model: " + _shorten(unexpected))
    if problems:
        advice = _self_test_advice(missing, unexpected, mismatched) or \
            "Check --model and --num-classes, or that the file holds weights for this network."
        raise WeightsError("{} does not fit the model:\n  {}\n{}".format(path, "\n  ".join(problems), advice))
    return fresh


_LATER_BLOCK = re.compile(r"(layer[1-4])\.[1-9][0-9]*\.")  # a ResNet stage's bottlenecks after its first


def _only_later_blocks(keys):
    """Whether ``keys`` are all ResNet bottlenecks after a stage's first, from each of the four stages."""
    stages = {match.group(1) if match else None for match in map(_LATER_BLOCK.match, keys)}
    return stages == {"layer1", "layer2", "layer3", "layer4"}


def _self_test_advice(missing, unexpected, mismatched):
    """What to do when the file and the model differ by just the blocks the self-test network
    (utils/runtime.py) leaves out, or None."""
    switch = "{}=1 (utils/runtime.py)".format(SELF_TEST_VARIABLE)
    if mismatched or (missing and unexpected):
        return None
    if missing and _only_later_blocks(missing):
        return "The file holds the self-test network (one bottleneck per ResNet stage); load it with {}.".format(
            switch)
    if unexpected and _only_later_blocks(unexpected) and self_test_network():
        return "{} is set, so the model is the self-test network; unset it to load a real one.".format(switch)
    return None


# What paddle.save needs to store a state dict ({name: ndarray}), in numpy 1 and 2 spelling.
_PADDLE_FILE_GLOBALS = frozenset([
    ("collections", "OrderedDict"), ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
])
# paddle.save adds this table of auto-generated parameter names to every state dict.
_PADDLE_NAME_TABLE = "StructuredToParameterName@@"


class _StateDictUnpickler(pickle.Unpickler):
    """Rebuilds arrays and dictionaries only; a file naming any other callable is refused unrun."""

    def __init__(self, file, path):
        super().__init__(file)
        self.path = path

    def find_class(self, module, name):
        if (module, name) in _PADDLE_FILE_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError("{}: refused to load: it asks to call {}.{}, which no weights or training-state "
                                "file needs; it may be malicious".format(self.path, module, name))


def read_paddle_pickle(path):
    """What ``paddle.save`` wrote to ``path``, read without running anything from the file (unlike
    paddle.load): only dictionaries, lists, numbers, strings and numpy arrays are rebuilt."""
    try:
        with open(path, "rb") as f:
            obj = _StateDictUnpickler(f, path).load()
    except UnsafePickleError as exc:
        raise WeightsError(str(exc))
    except Exception as exc:  # a torn or foreign file fails in assorted ways
        raise WeightsError("{}: cannot be read as a Paddle file ({}: {}). If a snapshot was cut short, "
                           "use an earlier one.".format(path, type(exc).__name__, exc))
    return obj


def _read_paddle_file(path):
    obj = read_paddle_pickle(path)
    if isinstance(obj, dict):
        obj.pop(_PADDLE_NAME_TABLE, None)
    return _unwrap(obj, path)


def hash_suffix(path):
    """The start of its SHA-256 that ``path``'s name promises (``-<8 or more lowercase hex>.<ext>``),
    or None.

    A .pdparams promises nothing: the notebooks give a converted file its source's name, hash
    suffix included, and converting changes every byte.
    """
    if path.endswith(".pdparams"):
        return None
    match = _HASH_SUFFIX.search(os.path.basename(path))
    # All digits is more likely a date or a step (model-20240101.pth) than a hash: not checked.
    return match.group(1) if match and not match.group(1).isdigit() else None


def file_digest(path, algorithm="sha256"):
    """Hex digest (hashlib's ``algorithm``) of ``path``; remembered per path, size and mtime, so a
    file is hashed once."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns, algorithm)
    if key not in _digests_by_file:
        digest = getattr(hashlib, algorithm)()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
                digest.update(chunk)
        _digests_by_file[key] = digest.hexdigest()
    return _digests_by_file[key]


def file_sha256(path):
    return file_digest(path, "sha256")


def check_hash_suffix(path, name=None):
    """Refuse ``path`` if its name's (or ``name``'s) hash suffix (torch.hub style) does not start
    its SHA-256; returns the prefix checked, or None when the name carries none."""
    expected = hash_suffix(name or path)
    if expected is None:
        return None
    actual = file_sha256(path)[:len(expected)]
    if actual != expected:
        raise WeightsError("{} ({} bytes): its name says its SHA-256 starts {}, but it starts {}: the download is "
                           "damaged or incomplete. Download it again, or pass --no-hash-check if the file was "
                           "renamed on purpose".format(name or path, os.path.getsize(path), expected, actual))
    return expected


def read_weights(path, model, allow_fresh=(), check_hash=True):
    """Read and check ``path`` (.pdparams, or .pth converted on the fly) for ``model``.

    With ``check_hash``, a name with a hash suffix (GTA2Cityscapes_multi-ed35151c.pth) is checked
    against the file's SHA-256 first (check_hash_suffix). Returns a LoadReport whose ``params``
    are float32 arrays keyed by Paddle names.
    """
    if not os.path.isfile(path):
        raise WeightsError("weights file not found: {}".format(path))
    hash_prefix = check_hash_suffix(path) if check_hash else None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if path.endswith(".pdparams"):
        params, skipped, kind = _read_paddle_file(path), [], "paddle"
    else:
        try:
            torch_state = load_torch_file(path)
        except TorchFileError as exc:
            raise WeightsError(str(exc))
        params, skipped, kind = torch_to_paddle(_unwrap(torch_state, path), path, expected)
    fresh = check_against_model(params, expected, path, allow_fresh)
    params = {k: v.astype(np.float32, copy=False) if v.dtype != np.float32 else v for k, v in params.items()}
    return LoadReport(path, kind, params, skipped, fresh, hash_prefix)


def load_weights(model, path, allow_fresh=(), check_hash=True):
    """Load ``path`` into ``model`` strictly; ``allow_fresh`` names prefixes that may be absent;
    ``check_hash=False`` (--no-hash-check) skips the check of a hash suffix (read_weights).

    Returns the LoadReport (``report.summary()`` says what was loaded, skipped and left fresh).
    """
    report = read_weights(path, model, allow_fresh, check_hash)
    # Give Paddle every key (the fresh ones as they are) so it has no partial load to warn about.
    full = dict(model.state_dict())
    full.update(report.params)
    model.set_state_dict(full)
    return report
