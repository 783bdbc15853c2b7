"""Tests for utils.files.torch_pickle: reading torch.save checkpoints with numpy only.

The fixtures in tests/fixtures/torch_files/ were written by real PyTorch
(see tests/fixtures/make_torch_files.py); everything else is fabricated here
with the torch-free writers of utils/demo/torch_writer.py or by hand.
"""

import collections
import functools
import io
import os
import pickle
import pickletools
import shlex
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import FIXTURES
from utils.demo.torch_writer import RawTensor, save_legacy, save_zip
from utils.files.torch_pickle import ALLOWED_GLOBALS, TorchFileError, UnsafePickleError, load_torch_file

TORCH_FILES = Path(FIXTURES) / "torch_files"
FORMATS = ("zip", "legacy")

WRITERS = {
    "legacy": save_legacy,
    # Like checkpoints saved from the GPU by PyTorch 0.3: torch.cuda.FloatStorage, _rebuild_tensor.
    "legacy-0.3-gpu": functools.partial(save_legacy, device="cuda:0", old_tensors=True),
    "zip": save_zip,
    "zip-big-endian": functools.partial(save_zip, byteorder="big"),
}


@pytest.fixture(scope="module")
def expected():
    """Arrays the fixture tensors must load as, keyed '<group>/<name>' in saving order."""
    with np.load(str(TORCH_FILES / "expected.npz")) as data:
        return collections.OrderedDict((name, data[name]) for name in data.files)


def group(expected, prefix):
    return collections.OrderedDict(
        (name.split("/", 1)[1], array) for name, array in expected.items() if name.startswith(prefix + "/")
    )


def assert_array_loaded(actual, want, where=""):
    """Same dtype, shape and values, and a standalone C-contiguous array."""
    assert isinstance(actual, np.ndarray), where
    assert actual.dtype == want.dtype, (where, actual.dtype, want.dtype)
    assert actual.shape == want.shape, (where, actual.shape, want.shape)
    assert actual.flags.c_contiguous and actual.flags.owndata, where
    np.testing.assert_array_equal(actual, want, err_msg=where)


def assert_state_dicts_equal(actual, want):
    assert list(actual.keys()) == list(want.keys())
    for name, array in want.items():
        assert_array_loaded(actual[name], array, name)


# ------------------------------------------------------- files from real torch


@pytest.mark.parametrize("fmt", FORMATS)
def test_tensors_saved_by_torch_load_as_expected_arrays(fmt, expected):
    loaded = load_torch_file(TORCH_FILES / "tensors_{}.pth".format(fmt))

    want = group(expected, "tensors")
    assert type(loaded) is dict
    assert sorted(loaded) == sorted(want)
    for name, array in want.items():
        assert_array_loaded(loaded[name], array, name)
    # Spot checks that do not rely on expected.npz.
    assert loaded["scalar"].shape == () and loaded["scalar"] == 3.25
    assert loaded["empty"].shape == (0, 3)
    assert loaded["bfloat16"].dtype == np.float32 and list(loaded["bfloat16"][:2]) == [1.5, -2.25]
    assert loaded["int64"][1, 1] == 2 ** 40
    np.testing.assert_array_equal(loaded["transposed"], loaded["transposed"].T.T)
    np.testing.assert_array_equal(loaded["stepped"], loaded["transposed"].T[::2, 1::2])


@pytest.mark.parametrize("fmt", FORMATS)
def test_tensors_sharing_a_storage_come_back_as_independent_arrays(fmt):
    loaded = load_torch_file(TORCH_FILES / "tensors_{}.pth".format(fmt))
    base, head, tail = loaded["shared_base"], loaded["shared_head"], loaded["shared_tail"]

    np.testing.assert_array_equal(head, base[1:4])
    np.testing.assert_array_equal(tail, base[6:].reshape(3, 2))
    assert not np.shares_memory(base, head) and not np.shares_memory(base, tail)
    base[:] = -1
    assert head.min() >= 0 and tail.min() >= 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_module_state_dict_keeps_order_and_batchnorm_counter(fmt, expected):
    loaded = load_torch_file(TORCH_FILES / "state_dict_{}.pth".format(fmt))

    assert isinstance(loaded, collections.OrderedDict)
    assert_state_dicts_equal(loaded, group(expected, "state_dict"))
    counter = loaded["1.num_batches_tracked"]
    assert counter.dtype == np.int64 and counter.shape == () and counter == 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_checkpoint_dict_keeps_plain_values(fmt, expected):
    loaded = load_torch_file(TORCH_FILES / "checkpoint_{}.pth".format(fmt))

    assert type(loaded) is dict
    assert loaded["iter"] == 5 and type(loaded["iter"]) is int
    assert loaded["lr"] == 2.5e-4
    assert loaded["name"] == "deeplab"
    assert loaded["flags"] == [True, None, (1, "two")]
    assert isinstance(loaded["state_dict"], collections.OrderedDict)
    assert_state_dicts_equal(loaded["state_dict"], group(expected, "state_dict"))


# ----------------------------------------------- round trips through the writers


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_writer_output_loads_back_equal(writer, tmp_path):
    rng = np.random.RandomState(0)
    shared = rng.randn(3).astype(np.float32)
    weights = collections.OrderedDict(
        [
            ("layer.weight", rng.randn(1024, 1024).astype(np.float32)),  # 4 MB
            ("layer.half", rng.randn(7, 3).astype(np.float16)),
            ("layer.double", rng.randn(2, 2)),
            ("counts", np.array([-(2 ** 62), -1, 0, 2 ** 62], dtype=np.int64)),
            ("mask", np.array([[True, False]])),
            ("bytes", np.array([0, 200, 255], dtype=np.uint8)),
            ("scalar", np.array(-0.5, dtype=np.float32)),
            ("empty", np.zeros((2, 0), dtype=np.int64)),
            ("shared_a", shared),
            ("shared_b", shared),
        ]
    )
    for index in range(11):  # more than ten storages: keys sort differently as strings
        weights["extra{}".format(index)] = np.full((index + 1,), index, dtype=np.int64)
    checkpoint = {"state_dict": weights, "iter": 120000, "meta": {"arch": "deeplab", "lr": None}, "sizes": (1, 2)}
    path = tmp_path / "checkpoint.pth"
    WRITERS[writer](checkpoint, path)

    loaded = load_torch_file(path)

    assert type(loaded) is dict and list(loaded) == ["state_dict", "iter", "meta", "sizes"]
    assert loaded["iter"] == 120000 and loaded["meta"] == {"arch": "deeplab", "lr": None}
    assert loaded["sizes"] == (1, 2)
    assert isinstance(loaded["state_dict"], collections.OrderedDict)
    assert_state_dicts_equal(loaded["state_dict"], weights)
    assert not np.shares_memory(loaded["state_dict"]["shared_a"], loaded["state_dict"]["shared_b"])


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_offsets_and_strides_select_the_right_elements(writer, tmp_path):
    storage = np.arange(20, dtype=np.float32) * 1.5
    path = tmp_path / "views.pth"
    WRITERS[writer](
        {
            "strided": RawTensor(storage, 3, (2, 3), (1, 4)),  # element [i, j] is storage[3 + i + 4j]
            "broadcast": RawTensor(storage, 5, (2, 2), (0, 1)),  # stride 0 repeats a row
            "last": RawTensor(storage, 19, (), ()),
        },
        path,
    )

    loaded = load_torch_file(path)

    want = np.array([[storage[3 + i + 4 * j] for j in range(3)] for i in range(2)])
    assert_array_loaded(loaded["strided"], want)
    assert_array_loaded(loaded["broadcast"], np.array([[7.5, 9.0], [7.5, 9.0]], dtype=np.float32))
    assert_array_loaded(loaded["last"], np.array(28.5, dtype=np.float32))


def test_legacy_storage_view_metadata_is_honoured(tmp_path):
    storage = np.arange(10, dtype=np.int64) * 3
    path = tmp_path / "old_views.pth"
    save_legacy(
        {
            "whole": storage,
            # As PyTorch 0.3 wrote it: the tensor indexes into storage[4:10].
            "in_view": RawTensor(storage, 1, (2,), (2,), view=("view-1", 4, 6)),
        },
        path,
    )

    loaded = load_torch_file(path)

    assert_array_loaded(loaded["whole"], storage)
    assert_array_loaded(loaded["in_view"], np.array([15, 21], dtype=np.int64))


@pytest.mark.parametrize(
    "writer, tensor",
    [
        ("zip", RawTensor(np.zeros(10, np.float32), 8, (3,), (1,))),  # runs off the end
        ("legacy-0.3-gpu", RawTensor(np.zeros(10, np.float32), 0, (2, 2), (1, 9))),  # stride reaches element 10
        ("zip-big-endian", RawTensor(np.zeros(10, np.float32), 10, (), ())),  # offset past the end
        ("legacy", RawTensor(np.zeros(10, np.float32), 0, (1,), (1,), view=("v", 8, 5))),  # view past the end
    ],
)
def test_views_outside_their_storage_are_refused(writer, tensor, tmp_path):
    path = tmp_path / "bad_view.pth"
    WRITERS[writer]({"t": tensor}, path)

    with pytest.raises(TorchFileError, match="holds only 10") as info:
        load_torch_file(path)
    assert str(path) in str(info.value)


def test_tiny_storage_cannot_expand_into_a_huge_tensor(tmp_path):
    path = tmp_path / "blow_up.pth"
    save_zip({"t": RawTensor(np.zeros(1, np.float32), 0, (1 << 20, 1 << 20), (0, 0))}, path)

    with pytest.raises(TorchFileError, match="elements but its storage only 1"):
        load_torch_file(path)


# ------------------------------------------------------------------- security


class _CallOnLoad(object):
    """Unpickling this calls ``func(arg)``: the classic malicious-pickle payload."""

    def __init__(self, func, arg):
        self.func = func
        self.arg = arg

    def __reduce__(self):
        return self.func, (self.arg,)


def _system_payload(marker):
    # Protocol 2 writes a GLOBAL opcode naming e.g. posix.system.
    return pickle.dumps({"weight": _CallOnLoad(os.system, "touch " + shlex.quote(str(marker)))}, protocol=2)


def _exec_payload(marker):
    # Protocol 4 names the callable through STACK_GLOBAL instead.
    code = "open({!r}, 'w').close()".format(str(marker))
    return pickle.dumps(collections.OrderedDict(weight=_CallOnLoad(exec, code)), protocol=4)


PAYLOADS = {
    "os.system": (_system_payload, "{}.system".format(os.system.__module__)),
    "builtins.exec": (_exec_payload, "builtins.exec"),
}


def write_legacy_with_pickle(path, payload):
    """A legacy-layout file whose object pickle is ``payload``."""
    with open(str(path), "wb") as out:
        out.write(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2))
        out.write(pickle.dumps(1001, protocol=2))
        out.write(pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2))
        out.write(payload)
        out.write(pickle.dumps([], protocol=2))


def write_zip_with_pickle(path, payload):
    """A zip-layout file whose data.pkl is ``payload``."""
    with zipfile.ZipFile(str(path), "w") as archive:
        archive.writestr("evil/data.pkl", payload)
        archive.writestr("evil/byteorder", "little")
        archive.writestr("evil/version", "3\n")


CONTAINERS = {"legacy": write_legacy_with_pickle, "zip": write_zip_with_pickle}


@pytest.mark.parametrize("payload_name", sorted(PAYLOADS))
def test_payloads_used_below_really_run_code_under_plain_pickle(payload_name, tmp_path):
    # Guards the security tests against a payload that would be harmless anyway.
    make_payload, _ = PAYLOADS[payload_name]
    marker = tmp_path / "ran"
    pickle.loads(make_payload(marker))
    assert marker.exists()


@pytest.mark.parametrize("container", sorted(CONTAINERS))
@pytest.mark.parametrize("payload_name", sorted(PAYLOADS))
def test_malicious_pickle_is_refused_without_running_it(container, payload_name, tmp_path):
    make_payload, global_name = PAYLOADS[payload_name]
    marker = tmp_path / "pwned"
    path = tmp_path / "weights.pth"
    CONTAINERS[container](path, make_payload(marker))

    with pytest.raises(UnsafePickleError) as info:
        load_torch_file(path)

    assert not marker.exists()
    message = str(info.value)
    assert str(path) in message
    assert "'{}'".format(global_name) in message
    assert "malicious" in message
    assert isinstance(info.value, TorchFileError)


@pytest.mark.parametrize(
    "global_name",
    [
        "collections.Counter",
        "numpy.core.multiarray._reconstruct",
        "torch.nn.modules.conv.Conv2d",  # a whole pickled model, not a state_dict
        "torch._utils._rebuild_tensor_v3",
        "torch.storage.UntypedStorage",
        "torch.Size",
        "__builtin__.getattr",
    ],
)
def test_any_global_outside_the_allow_list_is_refused(global_name, tmp_path):
    module, name = global_name.rsplit(".", 1)
    # PROTO 2, GLOBAL module name, EMPTY_TUPLE, REDUCE, STOP: "call module.name()".
    payload = b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n)R."
    path = tmp_path / "odd.pth"
    write_zip_with_pickle(path, payload)

    with pytest.raises(UnsafePickleError, match="'{}'".format(global_name.replace(".", r"\."))):
        load_torch_file(path)


def test_numpy_arrays_pickled_directly_are_refused(tmp_path):
    path = tmp_path / "numpy_pickle.pth"
    write_legacy_with_pickle(path, pickle.dumps({"w": np.zeros(2)}, protocol=2))

    with pytest.raises(UnsafePickleError, match="_reconstruct"):
        load_torch_file(path)


def test_allow_list_is_exactly_what_tensors_need():
    storages = [
        "DoubleStorage", "FloatStorage", "HalfStorage", "BFloat16Storage", "LongStorage", "IntStorage",
        "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage", "ComplexFloatStorage", "ComplexDoubleStorage",
    ]
    assert ALLOWED_GLOBALS == frozenset(
        [
            "collections.OrderedDict",
            "torch._utils._rebuild_tensor",
            "torch._utils._rebuild_tensor_v2",
            "torch._utils._rebuild_parameter",
        ]
        + ["torch." + name for name in storages]
        + ["torch.cuda." + name for name in storages]
    )


# ------------------------------------------------------------- broken files


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty"),
        (b"just some text\n", "not a PyTorch checkpoint"),
        (pickle.dumps({"a": 1}, protocol=2), "not a PyTorch checkpoint"),
        (b"\x93NUMPY\x01\x00", "not a PyTorch checkpoint"),
    ],
)
def test_files_that_are_not_torch_checkpoints(content, reason, tmp_path):
    path = tmp_path / "not_torch.pth"
    path.write_bytes(content)

    with pytest.raises(TorchFileError, match=reason) as info:
        load_torch_file(path)
    assert str(path) in str(info.value)


def test_zip_without_data_pkl_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "arrays.npz"
    np.savez(str(path), w=np.zeros(2))

    with pytest.raises(TorchFileError, match="data.pkl") as info:
        load_torch_file(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("keep", [0.02, 0.5, 0.999])
def test_truncated_files_are_refused(fmt, keep, tmp_path):
    data = (TORCH_FILES / "tensors_{}.pth".format(fmt)).read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: int(len(data) * keep)])

    with pytest.raises(TorchFileError) as info:
        load_torch_file(path)
    assert str(path) in str(info.value)
    assert "truncated" in str(info.value)


def _copy_zip(source, target, replace):
    """Copy a zip archive, passing each record through ``replace(name, data)`` (None drops it)."""
    with zipfile.ZipFile(str(source)) as old, zipfile.ZipFile(str(target), "w") as new:
        for name in old.namelist():
            data = replace(name, old.read(name))
            if data is not None:
                new.writestr(name, data)


def test_zip_with_a_missing_storage_record(tmp_path):
    path = tmp_path / "missing.pth"
    _copy_zip(TORCH_FILES / "tensors_zip.pth", path, lambda name, data: None if name.endswith("/data/0") else data)

    with pytest.raises(TorchFileError, match="data/0' .*missing") as info:
        load_torch_file(path)
    assert str(path) in str(info.value)


def test_zip_with_a_short_storage_record(tmp_path):
    path = tmp_path / "short.pth"
    _copy_zip(TORCH_FILES / "tensors_zip.pth", path, lambda name, data: data[:-4] if name.endswith("/data/0") else data)

    with pytest.raises(TorchFileError, match="data/0' holds") as info:
        load_torch_file(path)
    assert str(path) in str(info.value)


def _legacy_pickles(data):
    """Split a legacy file into its five pickles and the raw storage bytes after them."""
    stream = io.BytesIO(data)
    pieces = []
    for _ in range(5):
        start = stream.tell()
        for _ in pickletools.genops(stream):
            pass
        pieces.append(data[start:stream.tell()])
    return pieces, data[stream.tell():]


def test_legacy_file_whose_storage_data_is_absent(tmp_path):
    pieces, _ = _legacy_pickles((TORCH_FILES / "tensors_legacy.pth").read_bytes())
    path = tmp_path / "no_storages.pth"
    # Keep the headers and the object, but list no storages and drop their bytes.
    path.write_bytes(b"".join(pieces[:4]) + pickle.dumps([], protocol=2))

    with pytest.raises(TorchFileError, match="absent from the file") as info:
        load_torch_file(path)
    assert str(path) in str(info.value)


def test_very_old_tar_format_is_refused_clearly(tmp_path):
    path = tmp_path / "ancient.pth"
    with tarfile.open(str(path), "w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("pickle")
        info.size = 3
        archive.addfile(info, io.BytesIO(b"abc"))

    with pytest.raises(TorchFileError, match="tar-based format") as info:
        load_torch_file(path)
    assert str(path) in str(info.value)


def test_missing_path_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_torch_file(tmp_path / "nope.pth")

