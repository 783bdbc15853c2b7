"""Read files written by ``torch.save`` without PyTorch, and without trusting them.

``load_torch_file(path)`` returns the object stored in a PyTorch checkpoint
(typically a ``state_dict`` or a dict wrapping one) with every tensor turned
into a numpy array.  PyTorch itself is never imported.

Two on-disk layouts are understood:

* the zip layout written by ``torch.save`` since PyTorch 1.6: a zip archive
  whose single top-level folder (named after the file by ``torch.save``)
  holds ``data.pkl`` (the object, pickled), ``data/<key>`` (one raw storage
  per key) and an optional ``byteorder`` record ("little" or "big");
* the legacy layout of PyTorch < 1.6 (still written with
  ``_use_new_zipfile_serialization=False``), which is a plain sequence of
  pickles: a magic number, the protocol version 1001, a dict describing the
  writing machine, the object itself, the sorted list of storage keys, and
  then for each of those keys an 8-byte little-endian element count followed
  by the raw little-endian elements.

The even older tar-based layout is refused with a clear error.

Security: a pickle can name any importable callable and have it called, so a
downloaded ``.pth`` file can run arbitrary code under ``torch.load`` with
``weights_only=False``.  Here the unpickler resolves only a short allow-list
of names (``ALLOWED_GLOBALS``): ``collections.OrderedDict``, the three
``torch._utils`` tensor rebuild functions (answered by numpy
re-implementations in this module) and the ``torch.<Type>Storage`` names,
which resolve to inert markers.  Every other name raises
:class:`UnsafePickleError` before anything from the file is executed.
"""

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

__all__ = [
    "ALLOWED_GLOBALS",
    "TorchFileError",
    "UnsafePickleError",
    "load_torch_file",
]


class TorchFileError(ValueError):
    """The file is not a readable PyTorch checkpoint (corrupt, truncated or unsupported)."""


class UnsafePickleError(TorchFileError):
    """The checkpoint's pickle names a global that is not on the allow-list."""


class _FormatProblem(Exception):
    """Raised inside the reader; ``load_torch_file`` adds the path and re-raises as TorchFileError."""


# Pickled ahead of everything else in a legacy file (see the module docstring).
_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001

# How many bytes of the file are sniffed to tell the layouts apart.
_SNIFF_BYTES = 512

# Largest tensor (in elements) allowed to have more elements than its storage,
# which only broadcast (stride-0) views do.
_MAX_EXPANDED_ELEMENTS = 1 << 24


class _StorageType(object):
    """Inert stand-in for a ``torch.<Name>Storage`` class named by a pickle.

    ``code`` is the little-endian numpy type code of one stored element.
    Instances are not callable, so a pickle cannot use them to construct
    anything; they only tell the reader how to interpret raw storage bytes.
    """

    __slots__ = ("name", "code")

    def __init__(self, name, code):
        self.name = name
        self.code = code

    @property
    def itemsize(self):
        return np.dtype(self.code).itemsize

    def __repr__(self):
        return "<torch storage type {}>".format(self.name)


# Element layout of every storage class the reader accepts.  bfloat16 has no
# numpy dtype: its raw 16-bit patterns are widened to float32 on load.
_STORAGE_TYPES = {
    "DoubleStorage": _StorageType("DoubleStorage", "<f8"),
    "FloatStorage": _StorageType("FloatStorage", "<f4"),
    "HalfStorage": _StorageType("HalfStorage", "<f2"),
    "BFloat16Storage": _StorageType("BFloat16Storage", "<u2"),
    "LongStorage": _StorageType("LongStorage", "<i8"),
    "IntStorage": _StorageType("IntStorage", "<i4"),
    "ShortStorage": _StorageType("ShortStorage", "<i2"),
    "CharStorage": _StorageType("CharStorage", "i1"),
    "ByteStorage": _StorageType("ByteStorage", "u1"),
    "BoolStorage": _StorageType("BoolStorage", "u1"),
    "ComplexFloatStorage": _StorageType("ComplexFloatStorage", "<c8"),
    "ComplexDoubleStorage": _StorageType("ComplexDoubleStorage", "<c16"),
}

# Recent torch always names storage classes under ``torch``; checkpoints
# written from the GPU by PyTorch 0.x name them under ``torch.cuda``.
_STORAGE_MODULES = ("torch", "torch.cuda")


class _Pending(object):
    """Placeholder for a storage whose bytes have not been read yet.

    The legacy layout stores tensor data *after* the pickle that describes the
    tensors, so that pickle is first read once just to learn which storages
    exist (every tensor then evaluates to this placeholder), and read again
    once the storages are in memory.
    """

    def __repr__(self):
        return "<storage not loaded yet>"


_PENDING = _Pending()


def _as_index_list(value, what):
    """Validate a tensor size or stride: a sequence of non-negative ints."""
    if not isinstance(value, (tuple, list)):
        raise _FormatProblem("tensor {} is {!r}, expected a tuple of ints".format(what, value))
    result = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or item < 0:
            raise _FormatProblem("tensor {} {!r} holds {!r}, expected non-negative ints".format(what, value, item))
        result.append(item)
    return tuple(result)


def _tensor_from_storage(storage, storage_offset, size, stride):
    """Copy the elements a (storage, offset, size, stride) view selects into a new C-contiguous array."""
    if storage is _PENDING:
        return _PENDING
    if not isinstance(storage, np.ndarray) or storage.ndim != 1:
        raise _FormatProblem("a tensor was given {!r} as its storage".format(type(storage).__name__))
    if isinstance(storage_offset, bool) or not isinstance(storage_offset, int) or storage_offset < 0:
        raise _FormatProblem("tensor storage offset is {!r}, expected a non-negative int".format(storage_offset))
    size = _as_index_list(size, "size")
    stride = _as_index_list(stride, "stride")
    if len(size) != len(stride):
        raise _FormatProblem("tensor size {} and stride {} differ in length".format(size, stride))

    numel = 1
    for extent in size:
        numel *= extent
    if numel == 0:
        return np.zeros(size, dtype=storage.dtype)
    if numel > _MAX_EXPANDED_ELEMENTS and numel > storage.shape[0]:
        # Only stride-0 (expanded) views can outgrow their storage; refuse a blow-up.
        raise _FormatProblem(
            "tensor of size {} has {} elements but its storage only {}".format(size, numel, storage.shape[0])
        )
    # A dimension of extent 1 never steps, whatever its stride says.
    stride = tuple(step if extent > 1 else 0 for extent, step in zip(size, stride))

    # Index of the last element the view touches (strides are non-negative).
    last = storage_offset + sum((extent - 1) * step for extent, step in zip(size, stride))
    if last >= storage.shape[0]:
        raise _FormatProblem(
            "tensor with offset {}, size {} and stride {} reaches element {} "
            "but its storage holds only {} elements".format(storage_offset, size, stride, last, storage.shape[0])
        )
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[storage_offset:],
        shape=size,
        strides=tuple(step * itemsize for step in stride),
        writeable=False,
    )
    return np.array(view, copy=True, order="C")


def _apply_tensor_metadata(array, metadata):
    """Honour the lazy conjugate / negative bits torch may record for a tensor."""
    if array is _PENDING or not metadata:
        return array
    if not isinstance(metadata, dict):
        raise _FormatProblem("tensor metadata is {!r}, expected a dict".format(metadata))
    for flag, value in metadata.items():
        if not value:
            continue
        if flag == "conj":
            array = np.conj(array)
        elif flag == "neg":
            array = np.negative(array)
        else:
            raise _FormatProblem("unsupported tensor metadata {!r}".format(metadata))
    return np.array(array, copy=True, order="C")


# numpy stand-ins for the torch._utils functions a tensor pickles as.  Their
# signatures follow the argument tuples torch writes; ``requires_grad`` and
# ``backward_hooks`` have no numpy meaning and are dropped.

def _rebuild_tensor(storage, storage_offset, size, stride):
    return _tensor_from_storage(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    array = _tensor_from_storage(storage, storage_offset, size, stride)
    return _apply_tensor_metadata(array, metadata)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    if data is not _PENDING and not isinstance(data, np.ndarray):
        raise _FormatProblem("a parameter wraps {!r}, expected a tensor".format(type(data).__name__))
    return data


# (module, name) -> object handed to the unpickler.  Nothing else resolves.
_ALLOWED_CALLABLES = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}

#: Every ``module.name`` a checkpoint's pickle may refer to.
ALLOWED_GLOBALS = frozenset(
    ["{}.{}".format(module, name) for module, name in _ALLOWED_CALLABLES]
    + ["{}.{}".format(module, name) for module in _STORAGE_MODULES for name in _STORAGE_TYPES]
)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals and hands storage references to a callback."""

    def __init__(self, file, path, storage_for=None):
        # Strings pickled by Python 2 arrive as bytes; torch decodes them as UTF-8 too.
        super(_RestrictedUnpickler, self).__init__(file, encoding="utf-8")
        self._path = path
        self._storage_for = storage_for

    def find_class(self, module, name):
        found = _ALLOWED_CALLABLES.get((module, name))
        if found is not None:
            return found
        if module in _STORAGE_MODULES and name in _STORAGE_TYPES:
            return _STORAGE_TYPES[name]
        raise UnsafePickleError(
            "{}: refusing to load, its pickle asks for the global '{}.{}', which is "
            "not needed to rebuild tensors; the file may be malicious or may not be "
            "a weights file (e.g. a whole pickled model rather than a state_dict)".format(self._path, module, name)
        )

    def persistent_load(self, pid):
        if self._storage_for is None:
            raise _FormatProblem("unexpected storage reference {!r} in a header pickle".format(pid))
        return self._storage_for(_StorageRef.parse(pid))


def _ascii(value):
    if isinstance(value, bytes):
        return value.decode("ascii")
    return value


class _StorageRef(object):
    """A parsed storage reference ("persistent id") from a checkpoint pickle.

    The zip layout writes ``('storage', type, key, location, numel)``; the
    legacy layout appends ``view_metadata``, either None or
    ``(view_key, offset, view_numel)`` describing a slice of the storage.
    """

    __slots__ = ("stype", "key", "numel", "view")

    def __init__(self, stype, key, numel, view):
        self.stype = stype
        self.key = key
        self.numel = numel
        self.view = view

    @classmethod
    def parse(cls, pid):
        if not isinstance(pid, tuple) or not pid:
            raise _FormatProblem("malformed storage reference {!r}".format(pid))
        kind = _ascii(pid[0])
        if kind == "module":
            raise _FormatProblem("the file pickles a whole nn.Module, not tensors; only state dicts are supported")
        if kind != "storage" or len(pid) not in (5, 6):
            raise _FormatProblem("malformed storage reference {!r}".format(pid))
        stype, key, location, numel = pid[1:5]
        view = pid[5] if len(pid) == 6 else None
        if not isinstance(stype, _StorageType):
            raise _FormatProblem("storage reference {!r} names no storage type".format(pid))
        key = _ascii(key)
        if isinstance(key, int) and not isinstance(key, bool):
            key = str(key)
        if not isinstance(key, str):
            raise _FormatProblem("storage key {!r} is not a string".format(key))
        if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
            raise _FormatProblem("storage {!r} has invalid element count {!r}".format(key, numel))
        if not isinstance(_ascii(location), str):
            raise _FormatProblem("storage {!r} has invalid location {!r}".format(key, location))
        if view is not None:
            if not isinstance(view, tuple) or len(view) != 3:
                raise _FormatProblem("storage {!r} has malformed view metadata {!r}".format(key, view))
            view_key, view_offset, view_numel = view
            view_key = _ascii(view_key)
            for number in (view_offset, view_numel):
                if isinstance(number, bool) or not isinstance(number, int) or number < 0:
                    raise _FormatProblem("storage {!r} has malformed view metadata {!r}".format(key, view))
            view = (str(view_key), view_offset, view_numel)
        return cls(stype, key, numel, view)


def _decode_storage(raw, stype, byteorder, key):
    """Turn raw storage bytes into a 1-D native-endian numpy array of the storage's elements."""
    dtype = np.dtype(stype.code)
    if byteorder == "big":
        dtype = dtype.newbyteorder(">")
    if len(raw) % dtype.itemsize:
        raise _FormatProblem("storage {!r} has {} bytes, not a multiple of {}".format(key, len(raw), dtype.itemsize))
    array = np.frombuffer(raw, dtype=dtype)
    if stype.name == "BFloat16Storage":
        # bfloat16 is the upper half of a float32.
        return (array.astype(np.uint32) << 16).view(np.float32)
    if stype.name == "BoolStorage":
        return array != 0
    if not dtype.isnative:
        array = array.astype(dtype.newbyteorder("="))
    return array


class _StorageTable(object):
    """Storages of one checkpoint, keyed as in its pickle, plus the slices legacy views make of them."""

    def __init__(self):
        self.types = {}   # key -> (_StorageType, numel) as first referenced
        self.arrays = {}  # key -> decoded 1-D array
        self.views = {}   # view key -> slice of a storage array

    def note(self, ref):
        """Record a reference; the same key must always mean the same storage."""
        seen = self.types.get(ref.key)
        if seen is None:
            self.types[ref.key] = (ref.stype, ref.numel)
        elif seen[0] is not ref.stype:
            raise _FormatProblem(
                "storage {!r} is referenced both as {} and as {}".format(ref.key, seen[0].name, ref.stype.name)
            )

    def resolve(self, ref):
        """The array (or legacy view slice) a loaded reference designates."""
        array = self.arrays[ref.key]
        if ref.view is None:
            return array
        view_key, offset, numel = ref.view
        view = self.views.get(view_key)
        if view is None:
            if offset + numel > array.shape[0]:
                raise _FormatProblem(
                    "storage view {!r} covers elements {}..{} of storage {!r}, which holds only {}".format(
                        view_key, offset, offset + numel, ref.key, array.shape[0]
                    )
                )
            view = array[offset:offset + numel]
            self.views[view_key] = view
        return view


# ---------------------------------------------------------------- zip layout


def _find_archive_prefix(names):
    """The ``<folder>/`` holding data.pkl (torch names the folder after the saved file)."""
    candidates = [name[: -len("data.pkl")] for name in names if name.endswith("/data.pkl") and name.count("/") == 1]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        if any(name.endswith("constants.pkl") for name in names):
            raise _FormatProblem("this is a TorchScript archive (torch.jit.save), not a torch.save checkpoint")
        raise _FormatProblem("zip archive without a '<folder>/data.pkl' record; not a torch.save checkpoint")
    first_folder = names[0].split("/", 1)[0] + "/"
    if first_folder in candidates:
        return first_folder
    raise _FormatProblem("zip archive holds several data.pkl records: {}".format(sorted(candidates)))


def _load_zip(fileobj, path):
    with zipfile.ZipFile(fileobj) as archive:
        names = archive.namelist()
        prefix = _find_archive_prefix(names)
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise _FormatProblem("unknown byte order record {!r}".format(byteorder))
        table = _StorageTable()

        def storage_for(ref):
            table.note(ref)
            if ref.key not in table.arrays:
                record = prefix + "data/" + ref.key
                try:
                    info = archive.getinfo(record)
                except KeyError:
                    raise _FormatProblem(
                        "storage record '{}' referenced by the pickle is missing from the archive".format(record)
                    )
                expected = ref.numel * ref.stype.itemsize
                if info.file_size != expected:
                    raise _FormatProblem(
                        "storage record '{}' holds {} bytes but {} {} elements need {}".format(
                            record, info.file_size, ref.numel, ref.stype.name, expected
                        )
                    )
                table.arrays[ref.key] = _decode_storage(archive.read(record), ref.stype, byteorder, ref.key)
            return table.resolve(ref)

        pickled = archive.read(prefix + "data.pkl")
        return _RestrictedUnpickler(io.BytesIO(pickled), path, storage_for).load()


# ------------------------------------------------------------- legacy layout


def _load_header_pickle(fileobj, path, what):
    """One of the small plain pickles around the object pickle of a legacy file."""
    try:
        return _RestrictedUnpickler(fileobj, path).load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # whatever the reason, the layout is not what it should be
        if what == "magic number":
            raise _FormatProblem(
                "not a PyTorch checkpoint: neither a zip archive nor a legacy file starting with the magic number "
                "({}: {})".format(type(exc).__name__, exc)
            )
        problem = "truncated" if isinstance(exc, EOFError) or "truncated" in str(exc) else "corrupt"
        raise _FormatProblem("file is {}: cannot read its {} ({}: {})".format(problem, what, type(exc).__name__, exc))


def _load_legacy(fileobj, path):
    magic = _load_header_pickle(fileobj, path, "magic number")
    if magic != _LEGACY_MAGIC_NUMBER:
        raise _FormatProblem(
            "not a PyTorch checkpoint: neither a zip archive nor a legacy file starting with the magic number"
        )
    version = _load_header_pickle(fileobj, path, "protocol version")
    if version != _LEGACY_PROTOCOL_VERSION:
        raise _FormatProblem(
            "unsupported legacy protocol version {!r} (expected {})".format(version, _LEGACY_PROTOCOL_VERSION)
        )
    sys_info = _load_header_pickle(fileobj, path, "system info")
    if not isinstance(sys_info, dict):
        raise _FormatProblem("malformed legacy system info {!r}".format(sys_info))
    main_pickle_start = fileobj.tell()

    # Pass 1: learn every storage's key, type and length.
    table = _StorageTable()

    def note_only(ref):
        table.note(ref)
        return _PENDING

    _RestrictedUnpickler(fileobj, path, note_only).load()
    keys = _load_header_pickle(fileobj, path, "storage key list")
    if not isinstance(keys, list):
        raise _FormatProblem("malformed storage key list {!r}".format(keys))

    # The raw storages follow, in the order of that list.
    for key in keys:
        key = _ascii(key)
        if key not in table.types:
            raise _FormatProblem("storage {!r} is listed but never referenced by the pickle".format(key))
        stype, numel = table.types[key]
        header = fileobj.read(8)
        if len(header) != 8:
            raise _FormatProblem("file is truncated: storage {!r} is missing".format(key))
        count = struct.unpack("<q", header)[0]
        if count != numel:
            # PyTorch 0.x on a big-endian machine wrote this count natively.
            if struct.unpack(">q", header)[0] != numel:
                raise _FormatProblem(
                    "storage {!r} should hold {} elements but the file says {}".format(key, numel, count)
                )
        nbytes = numel * stype.itemsize
        raw = fileobj.read(nbytes)
        if len(raw) != nbytes:
            raise _FormatProblem(
                "file is truncated: storage {!r} needs {} bytes, only {} remain".format(key, nbytes, len(raw))
            )
        # Legacy storages are little-endian whatever machine wrote them.
        table.arrays[key] = _decode_storage(raw, stype, "little", key)

    missing = sorted(key for key in table.types if key not in table.arrays)
    if missing:
        raise _FormatProblem("storage(s) {} referenced by the pickle are absent from the file".format(missing))

    # Pass 2: rebuild the object with the storages in hand.
    fileobj.seek(main_pickle_start)
    return _RestrictedUnpickler(fileobj, path, lambda ref: table.resolve(ref)).load()


# ------------------------------------------------------------------- entry


def _sniff(head):
    """Which layout the first bytes of a file announce."""
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if head.startswith(b"\x80"):
        return "legacy"
    return None


def load_torch_file(path):
    """Return the object stored in a torch.save() file, every tensor as a numpy array (owning its memory, C-contiguous).

    Containers come back as pickled (dict, ``collections.OrderedDict``,
    list, tuple) and plain values (numbers, strings, None) unchanged.
    ``nn.Parameter`` objects become plain arrays.  Tensors keep their dtype,
    except bfloat16, which becomes float32; each is an independent copy, even
    when several tensors shared one storage in the file.

    Raises:
        UnsafePickleError: the pickle names a global outside ``ALLOWED_GLOBALS``.
        TorchFileError: the file is not a torch.save checkpoint, is truncated
            or corrupt, or uses an unsupported feature.  The message starts
            with the path.
        OSError: the file cannot be opened.
    """
    path = os.fspath(path)
    with open(path, "rb") as fileobj:
        head = fileobj.read(_SNIFF_BYTES)
        fileobj.seek(0)
        try:
            layout = _sniff(head)
            if layout == "zip":
                return _load_zip(fileobj, path)
            if layout == "legacy":
                return _load_legacy(fileobj, path)
            if layout == "tar":
                raise _FormatProblem(
                    "this checkpoint uses the tar-based format of the earliest PyTorch releases, "
                    "which is not supported; re-save it with a newer PyTorch"
                )
            if not head:
                raise _FormatProblem("the file is empty")
            raise _FormatProblem("not a PyTorch checkpoint (neither a zip archive nor a legacy torch.save pickle)")
        except TorchFileError:
            raise
        except _FormatProblem as exc:
            raise TorchFileError("{}: {}".format(path, exc)) from None
        except zipfile.BadZipFile as exc:
            raise TorchFileError("{}: corrupt or truncated zip archive ({})".format(path, exc)) from exc
        except EOFError as exc:
            raise TorchFileError("{}: file is truncated (pickle data ran out)".format(path)) from exc
        except pickle.UnpicklingError as exc:
            problem = "file is truncated" if "truncated" in str(exc) else "corrupt pickle data"
            raise TorchFileError("{}: {} ({})".format(path, problem, exc)) from exc
        except (
            ValueError,
            TypeError,
            KeyError,
            IndexError,
            AttributeError,
            OverflowError,
            struct.error,
            MemoryError,
        ) as exc:
            raise TorchFileError(
                "{}: corrupt or unsupported PyTorch checkpoint ({}: {})".format(path, type(exc).__name__, exc)
            ) from exc
