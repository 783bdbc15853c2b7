"""Write PyTorch checkpoint files from numpy arrays, without PyTorch.

It ships with the demo because fabricating ``.pth`` files is all it is for: the notebooks' DEMO
mode writes stand-ins for the authors' weights with it, so that their conversion really runs,
and the tests write their PyTorch fixtures. Reading the authors' files is
``utils/files/torch_pickle.py``'s job.

``save_legacy(obj, path)`` writes the pre-1.6 layout (like the released
AdaptSegNet ``.pth`` files) and ``save_zip(obj, path)`` the zip layout that
``torch.save`` has written by default since PyTorch 1.6.  Real ``torch.load``
reads both; ``tests/fixtures/make_torch_files.py`` checks that against an
actual PyTorch install.

``obj`` is a dict / OrderedDict (usually string keys) whose values are numpy
arrays, plain Python values (None, bool, int, float, str) or nested dicts,
lists and tuples of those.  Every numpy array becomes a contiguous tensor
with its own storage, except that the *same array object* met twice is saved
once and both places refer to one storage (as torch does for shared
tensors).  To fabricate a tensor with a storage offset, arbitrary strides or
(legacy only) storage view metadata, put a :class:`RawTensor` in ``obj``.

The object pickle is emitted opcode by opcode here, because a stock pickler
can only name a global (``torch._utils._rebuild_tensor_v2``,
``torch.FloatStorage``, ...) by importing it, and torch is not installed.
The output uses pickle protocol 2, as torch.save does by default.
"""

import collections
import os
import pickle
import struct
import zipfile

import numpy as np

__all__ = ["RawTensor", "save_legacy", "save_zip"]

# Legacy layout constants (see utils/files/torch_pickle.py).
_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001
# What torch.save records about the writing machine; torch measures the
# sizes with standard (not native) struct sizes, so "long" is 4.
_LEGACY_SYS_INFO = {
    "protocol_version": _LEGACY_PROTOCOL_VERSION,
    "little_endian": True,
    "type_sizes": {"short": 2, "int": 4, "long": 4},
}

# numpy dtype -> torch storage class name.
_STORAGE_NAMES = {
    np.dtype(np.float16): "HalfStorage",
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.int32): "IntStorage",
    np.dtype(np.int16): "ShortStorage",
    np.dtype(np.int8): "CharStorage",
    np.dtype(np.uint8): "ByteStorage",
    np.dtype(np.bool_): "BoolStorage",
    np.dtype(np.complex64): "ComplexFloatStorage",
    np.dtype(np.complex128): "ComplexDoubleStorage",
}

_ZIP_ALIGNMENT = 64  # torch aligns every storage record's data to 64 bytes
_ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)  # fixed, so equal inputs give equal files


class RawTensor(object):
    """A tensor written exactly as described: ``storage`` (a 1-D numpy array) seen
    through ``offset``, ``size`` and ``stride`` (counted in elements).

    Several RawTensors (or plain arrays) given the same ``storage`` object share
    one storage in the file.  Nothing is validated, so tests can also describe
    views that run past their storage.  ``view`` is for ``save_legacy`` only:
    ``(view_key, view_offset, view_numel)``, the storage-view metadata PyTorch
    0.3 and older wrote, making the tensor index into that slice of the storage.
    """

    def __init__(self, storage, offset, size, stride, view=None):
        if not isinstance(storage, np.ndarray) or storage.ndim != 1:
            raise TypeError("RawTensor storage must be a 1-D numpy array")
        self.storage = storage
        self.offset = offset
        self.size = tuple(size)
        self.stride = tuple(stride)
        self.view = view


class _Storage(object):
    """One storage to write: its key and its elements as a flat C-contiguous array."""

    __slots__ = ("key", "flat", "name")

    def __init__(self, key, flat, name):
        self.key = key
        self.flat = flat
        self.name = name

    def raw(self, byteorder):
        """The elements as a 1-D uint8 array in the requested byte order (no copy when already so)."""
        flat = self.flat
        if flat.dtype.itemsize > 1:
            flat = flat.astype(flat.dtype.newbyteorder("<" if byteorder == "little" else ">"), copy=False)
        return np.ascontiguousarray(flat).view(np.uint8)


class _PickleEmitter(object):
    """Writes a protocol-2 pickle of plain containers and numpy arrays as torch tensors."""

    def __init__(self, legacy, device="cpu", old_tensors=False):
        self._legacy = legacy
        self._device = device
        self._old_tensors = old_tensors
        self._out = []
        self._by_array = {}  # id(array) -> (_Storage, array kept alive so ids stay unique)
        self.storages = []

    def dumps(self, obj):
        self._out = [pickle.PROTO + b"\x02"]
        self._save(obj, set())
        self._out.append(pickle.STOP)
        return b"".join(self._out)

    # -- opcodes ---------------------------------------------------------

    def _global(self, module, name):
        self._out.append(pickle.GLOBAL + module.encode("ascii") + b"\n" + name.encode("ascii") + b"\n")

    def _int(self, value):
        if 0 <= value < 0x100:
            self._out.append(pickle.BININT1 + struct.pack("<B", value))
        elif 0 <= value < 0x10000:
            self._out.append(pickle.BININT2 + struct.pack("<H", value))
        elif -0x80000000 <= value < 0x80000000:
            self._out.append(pickle.BININT + struct.pack("<i", value))
        else:
            # Little-endian two's complement, just long enough to keep the sign.
            length = (value.bit_length() + 8) // 8
            encoded = value.to_bytes(length, "little", signed=True)
            if length > 255:
                raise ValueError("integer too large to write: {}".format(value))
            self._out.append(pickle.LONG1 + struct.pack("<B", length) + encoded)

    def _str(self, value):
        encoded = value.encode("utf-8")
        self._out.append(pickle.BINUNICODE + struct.pack("<I", len(encoded)) + encoded)

    def _tuple(self, items, active):
        if not items:
            self._out.append(pickle.EMPTY_TUPLE)
            return
        if len(items) > 3:
            self._out.append(pickle.MARK)
        for item in items:
            self._save(item, active)
        self._out.append({1: pickle.TUPLE1, 2: pickle.TUPLE2, 3: pickle.TUPLE3}.get(len(items), pickle.TUPLE))

    def _setitems(self, mapping, active):
        if mapping:
            self._out.append(pickle.MARK)
            for key, value in mapping.items():
                self._save(key, active)
                self._save(value, active)
            self._out.append(pickle.SETITEMS)

    def _empty_ordered_dict(self):
        self._global("collections", "OrderedDict")
        self._out.append(pickle.EMPTY_TUPLE + pickle.REDUCE)

    # -- values ----------------------------------------------------------

    def _save(self, obj, active):
        if obj is None:
            self._out.append(pickle.NONE)
        elif obj is True:
            self._out.append(pickle.NEWTRUE)
        elif obj is False:
            self._out.append(pickle.NEWFALSE)
        elif isinstance(obj, np.ndarray):
            self._tensor(self._storage_of(obj), 0, obj.shape, _contiguous_strides(obj.shape), None)
        elif isinstance(obj, RawTensor):
            self._tensor(self._storage_of(obj.storage), obj.offset, obj.size, obj.stride, obj.view)
        elif isinstance(obj, np.generic):
            raise TypeError(
                "numpy scalar {!r}: pass np.asarray(x) for a 0-dim tensor or x.item() for a plain number".format(obj)
            )
        elif isinstance(obj, int):
            self._int(obj)
        elif isinstance(obj, float):
            self._out.append(pickle.BINFLOAT + struct.pack(">d", obj))
        elif isinstance(obj, str):
            self._str(obj)
        elif isinstance(obj, (dict, list, tuple)):
            if id(obj) in active:
                raise ValueError("cannot write a self-referencing container")
            active.add(id(obj))
            if isinstance(obj, collections.OrderedDict):
                self._empty_ordered_dict()
                self._setitems(obj, active)
            elif isinstance(obj, dict):
                self._out.append(pickle.EMPTY_DICT)
                self._setitems(obj, active)
            elif isinstance(obj, list):
                self._out.append(pickle.EMPTY_LIST)
                if obj:
                    self._out.append(pickle.MARK)
                    for item in obj:
                        self._save(item, active)
                    self._out.append(pickle.APPENDS)
            else:
                self._tuple(obj, active)
            active.discard(id(obj))
        else:
            raise TypeError("cannot write {!r} objects to a torch file".format(type(obj).__name__))

    def _storage_of(self, array):
        """The storage holding ``array``'s elements; one per distinct array object."""
        seen = self._by_array.get(id(array))
        if seen is not None:
            return seen[0]
        name = _STORAGE_NAMES.get(array.dtype.newbyteorder("="))
        if name is None:
            raise TypeError("no torch storage type for numpy dtype {}".format(array.dtype))
        flat = np.ascontiguousarray(array).reshape(-1)
        storage = _Storage(str(len(self.storages)), flat, name)
        self.storages.append(storage)
        self._by_array[id(array)] = (storage, array)
        return storage

    def _tensor(self, storage, offset, size, stride, view):
        self._global("torch._utils", "_rebuild_tensor" if self._old_tensors else "_rebuild_tensor_v2")
        self._out.append(pickle.MARK)
        # The storage, as a persistent id: ('storage', type, key, location, numel[, view]).
        self._out.append(pickle.MARK)
        self._str("storage")
        self._global("torch.cuda" if self._device.startswith("cuda") else "torch", storage.name)
        self._str(storage.key)
        self._str(self._device)
        self._int(storage.flat.size)
        if self._legacy:
            if view is None:
                self._out.append(pickle.NONE)
            else:
                view_key, view_offset, view_numel = view
                self._tuple((str(view_key), view_offset, view_numel), set())
        elif view is not None:
            raise ValueError("storage views exist only in the legacy format")
        self._out.append(pickle.TUPLE + pickle.BINPERSID)
        self._int(offset)
        self._tuple(tuple(size), set())
        self._tuple(tuple(stride), set())
        if not self._old_tensors:
            self._out.append(pickle.NEWFALSE)  # requires_grad
            self._empty_ordered_dict()  # backward hooks
        self._out.append(pickle.TUPLE + pickle.REDUCE)


def _contiguous_strides(shape):
    """Row-major strides in elements, as torch computes them (a 0 extent counts as 1)."""
    strides = []
    step = 1
    for extent in reversed(shape):
        strides.append(step)
        step *= max(extent, 1)
    return tuple(reversed(strides))


def _check_top_level(obj):
    if not isinstance(obj, dict):
        raise TypeError("expected a dict or OrderedDict, got {!r}".format(type(obj).__name__))


def save_legacy(obj, path, device="cpu", old_tensors=False):
    """Write ``obj`` in the pre-1.6 torch.save layout (what ``_use_new_zipfile_serialization=False`` writes).

    The defaults match what current torch writes.  To mimic checkpoints saved
    from the GPU by PyTorch 0.x (such as the released AdaptSegNet weights),
    pass ``device="cuda:0"`` (storages then are ``torch.cuda.<Type>Storage``
    located on "cuda:0"; real torch needs ``map_location="cpu"`` for them
    without a GPU) and/or ``old_tensors=True`` (tensors pickled through
    ``torch._utils._rebuild_tensor(storage, offset, size, stride)`` as
    PyTorch 0.3 did, instead of ``_rebuild_tensor_v2``).
    """
    _check_top_level(obj)
    emitter = _PickleEmitter(legacy=True, device=device, old_tensors=old_tensors)
    main_pickle = emitter.dumps(obj)
    # torch lists the keys sorted as strings and writes the storages in that order.
    storages = sorted(emitter.storages, key=lambda storage: storage.key)
    with open(path, "wb") as out:
        for header in (_LEGACY_MAGIC_NUMBER, _LEGACY_PROTOCOL_VERSION, _LEGACY_SYS_INFO):
            out.write(pickle.dumps(header, protocol=2))
        out.write(main_pickle)
        out.write(pickle.dumps([storage.key for storage in storages], protocol=2))
        for storage in storages:
            out.write(struct.pack("<q", storage.flat.size))
            out.write(storage.raw("little"))


def _alignment_extra(position, name):
    """A zip extra field that pads a local header so the record's data starts on an aligned offset."""
    header_end = position + 30 + len(name.encode("utf-8"))  # fixed header part + file name
    padding = -header_end % _ZIP_ALIGNMENT
    if padding == 0:
        return b""
    if padding < 4:  # an extra field needs 4 bytes for its own id and length
        padding += _ZIP_ALIGNMENT
    # Same padding-field id ("FB") and filler torch's own writer uses.
    return b"FB" + struct.pack("<H", padding - 4) + b"Z" * (padding - 4)


def _write_record(archive, raw_file, name, data, align=False):
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIMESTAMP)
    info.compress_type = zipfile.ZIP_STORED
    if align:
        info.extra = _alignment_extra(raw_file.tell(), name)
    data = memoryview(data).cast("B")
    info.file_size = data.nbytes
    with archive.open(info, mode="w") as dest:
        dest.write(data)


def save_zip(obj, path, byteorder="little", archive_name=None):
    """Write ``obj`` in the zip layout of torch.save (PyTorch >= 1.6).

    ``byteorder`` ("little" or "big") selects how storages are encoded and is
    recorded in the archive, as a big-endian machine would write it.
    ``archive_name`` is the folder inside the zip; like torch.save, it
    defaults to the file name without its extension.
    """
    _check_top_level(obj)
    if byteorder not in ("little", "big"):
        raise ValueError("byteorder must be 'little' or 'big', not {!r}".format(byteorder))
    if archive_name is None:
        archive_name = os.path.splitext(os.path.basename(os.fspath(path)))[0] or "archive"
    emitter = _PickleEmitter(legacy=False)
    data_pkl = emitter.dumps(obj)
    prefix = archive_name + "/"
    with open(path, "wb") as raw_file:
        with zipfile.ZipFile(raw_file, mode="w", compression=zipfile.ZIP_STORED) as archive:
            _write_record(archive, raw_file, prefix + "data.pkl", data_pkl)
            _write_record(archive, raw_file, prefix + ".format_version", b"1")
            _write_record(archive, raw_file, prefix + ".storage_alignment", str(_ZIP_ALIGNMENT).encode("ascii"))
            _write_record(archive, raw_file, prefix + "byteorder", byteorder.encode("ascii"))
            for storage in emitter.storages:
                _write_record(archive, raw_file, prefix + "data/" + storage.key, storage.raw(byteorder), align=True)
            _write_record(archive, raw_file, prefix + "version", b"3\n")
