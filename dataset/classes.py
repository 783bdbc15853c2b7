"""Class sets: what a model predicts and how a dataset's label files say it, as data.

A ClassSet holds the class names in train-id order, their colours, the table from the values
stored in label files to train ids (with the values that mean "not labelled"), and the named
subsets a model is scored on (the first scored one is the headline). The benchmark's sets are
instances below; a user's set is a JSON or YAML file (``load_class_file``). Every other module
takes a ClassSet as a value; nothing else spells classes out.
"""
import json
import os
from collections import OrderedDict

import numpy as np

IGNORE_LABEL = 255  # the train id of pixels that are not scored or trained on

# Caffe-style BGR mean of the DeepLab ImageNet/COCO weights; images are not divided by a std.
IMG_MEAN_BGR = np.array((104.00698793, 116.66876762, 122.67891434), dtype=np.float32)


class ClassSetError(ValueError):
    """A class file or class set that cannot be used; the message names the file and the key."""


class ClassSet(object):
    """``names`` in train-id order, ``colours`` (Nx3 RGB; default distinct ones), ``label_values``
    {stored value: train id}, ``ignore_values`` (stored values that mean "not labelled"), ``subsets``
    {name: train ids} and
    ``scored`` (subset names a model is scored on, the headline first; default: all classes,
    named by their count as the reference's "19")."""

    def __init__(self, name, names, colours=None, label_values=None, ignore_values=(), subsets=None, scored=None):
        self.name = name
        self.path = None  # the class file it was read from, if any (errors name it)
        self.names = tuple(names)
        if colours is None:
            spare = _spare_colours(set())
            colours = [next(spare) for _ in self.names]
        self.colours = np.asarray(colours, dtype=np.uint8).reshape(len(self.names), 3)
        if label_values is None:
            label_values = {train_id: train_id for train_id in range(len(self.names))}
        self.label_values = dict(label_values)
        self.ignore_values = frozenset(ignore_values) - set(self.label_values)
        everything = str(len(self.names))
        self.subsets = OrderedDict([(everything, tuple(range(len(self.names))))])
        self.subsets.update((key, tuple(ids)) for key, ids in (subsets or {}).items())
        self.scored = tuple(scored or (everything,))
        unknown = [key for key in self.scored if key not in self.subsets]
        if unknown:
            raise ClassSetError("class set {}: 'scored' names {}, which is not among its subsets ({})".format(
                name, ", ".join(unknown), ", ".join(self.subsets)))

    def __repr__(self):
        return "ClassSet({!r}, {} classes)".format(self.name, self.num_classes)

    @property
    def num_classes(self):
        return len(self.names)

    @property
    def scored_subsets(self):
        """{name: train ids} of the subsets scored, the headline first."""
        return OrderedDict((key, self.subsets[key]) for key in self.scored)

    def derive(self, name, label_values=None, ignore_values=None, scored=None):
        """The same classes (names, colours, subsets) with another label table or scoring; by
        default the values this set knows and the new table leaves out are ignored."""
        if label_values is None:
            label_values = self.label_values
        if ignore_values is None:
            ignore_values = self.known_values() - set(label_values)
        return ClassSet(name, self.names, self.colours, label_values, ignore_values, self.subsets,
                        scored or self.scored)

    def lut(self, size=256, dtype=np.uint8, unknown=IGNORE_LABEL):
        """``size``-entry table: stored label value -> train id; ignored values -> IGNORE_LABEL,
        values in neither the table nor the ignored ones -> ``unknown``."""
        table = np.full(size, unknown, dtype=np.int64)
        for value in self.ignore_values:
            if 0 <= value < size:
                table[value] = IGNORE_LABEL
        for value, train_id in self.label_values.items():
            if 0 <= value < size:  # ids such as -1 (Cityscapes' license plate) never occur in a PNG
                table[value] = train_id
        return table.astype(dtype)

    def known_values(self):
        return set(self.label_values) | set(self.ignore_values)

    def palette(self):
        """256x3 uint8: the class colours, then black (ignored and unknown ids); a PNG palette."""
        palette = np.zeros((256, 3), dtype=np.uint8)
        palette[:self.num_classes] = self.colours[:256]
        return palette

    def colorize(self, train_ids):
        """HxW train ids -> HxWx3 uint8 RGB picture; ignored and unknown ids are black."""
        return self.palette()[np.asarray(train_ids, dtype=np.uint8)]

    def record(self):
        """What a run's class_set.json keeps of the set: enough to check a model against a set, to draw
        its predictions and to write them as label values."""
        return {"name": self.name, "names": list(self.names), "colours": self.colours.tolist(),
                "values": sorted([value, train_id] for value, train_id in self.label_values.items()),
                "ignore": sorted(self.ignore_values),
                "subsets": {key: list(ids) for key, ids in self.subsets.items()}, "scored": list(self.scored)}

    def check_num_classes(self, num_classes):
        """Refuse a --num-classes other than this set's."""
        if num_classes is not None and num_classes != self.num_classes:
            raise ClassSetError("--num-classes {}: the class set {} has {} classes (drop --num-classes: it follows "
                                "the class set)".format(num_classes, self.name, self.num_classes))

    def check_model_classes(self, record, what):
        """Refuse a model whose recorded class set (``record``) is another one; ``what`` names it."""
        if record is None or list(record.get("names", ())) == list(self.names):
            return
        raise ClassSetError("{} was trained on the class set {} ({} classes: {}), but this run uses {} ({} "
                            "classes: {}); give the class set it was trained on (--source/--target/--classes)"
                            .format(what, record.get("name"), len(record["names"]), few_names(record["names"]),
                                    self.name, self.num_classes, few_names(self.names)))


def few_names(names, shown=6):
    """'road, sidewalk, ...': the start of a list of class names, for messages."""
    names = list(names)
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


# (name, Cityscapes label id, colour) in train-id order.
_CITYSCAPES = (
    ("road", 7, (128, 64, 128)),
    ("sidewalk", 8, (244, 35, 232)),
    ("building", 11, (70, 70, 70)),
    ("wall", 12, (102, 102, 156)),
    ("fence", 13, (190, 153, 153)),
    ("pole", 17, (153, 153, 153)),
    ("light", 19, (250, 170, 30)),
    ("sign", 20, (220, 220, 0)),
    ("vegetation", 21, (107, 142, 35)),
    ("terrain", 22, (152, 251, 152)),
    ("sky", 23, (70, 130, 180)),
    ("person", 24, (220, 20, 60)),
    ("rider", 25, (255, 0, 0)),
    ("car", 26, (0, 0, 142)),
    ("truck", 27, (0, 0, 70)),
    ("bus", 28, (0, 60, 100)),
    ("train", 31, (0, 80, 100)),
    ("motorcycle", 32, (0, 0, 230)),
    ("bicycle", 33, (119, 11, 32)),
)
_NAMES = tuple(name for name, _, _ in _CITYSCAPES)


def _ids(names):
    return tuple(_NAMES.index(name) for name in names)


_NOT_IN_SYNTHIA = ("terrain", "truck", "train")
# Every set is scored from the same 19x19 confusion matrix, as the weak-label reference does (it
# deletes the IoUs of the classes left out). A model trained on SYNTHIA never sees terrain, truck
# or train: the literature scores it on the other 16 classes, and the AdaptSegNet paper on 13
# (also without wall, fence and pole). The NTHU cities' test labels annotate 13 classes, and both
# public cross-city loaders (ZJULearning/MaxSquareLoss datasets/crosscity_Dataset.py, joonh-kim/ETM
# dataset/crosscity_dataset.py) score exactly them: by train id SYNTHIA's 13, named apart because a
# different fact decides them (what the target's labels hold, not what the source lacks).
CROSS_CITY_CLASSES = ("road", "sidewalk", "building", "light", "sign", "vegetation", "sky", "person", "rider",
                      "car", "bus", "motorcycle", "bicycle")
_SUBSETS = OrderedDict([
    ("16", _ids(name for name in _NAMES if name not in _NOT_IN_SYNTHIA)),
    ("13", _ids(name for name in _NAMES if name not in _NOT_IN_SYNTHIA + ("wall", "fence", "pole"))),
    ("crosscity13", _ids(CROSS_CITY_CLASSES)),
])

# Cityscapes label ids 0..33 (and GTA5's, which are the same); the ids of no class are not labelled.
CITYSCAPES = ClassSet("cityscapes", _NAMES, [colour for _, _, colour in _CITYSCAPES],
                      {label_id: train_id for train_id, (_, label_id, _) in enumerate(_CITYSCAPES)},
                      ignore_values=range(34), subsets=_SUBSETS)

# SYNTHIA-RAND-CITYSCAPES GT/LABELS class ids 0 (void) .. 22 (lane marking) -> train ids of the 16
# classes it shares with Cityscapes: road, sidewalk, building, wall, fence, pole, light, sign,
# vegetation, sky, person, rider, car, bus, motorcycle, bicycle. Sources (read, not copied):
# lhoyer/DAFormer tools/convert_datasets/synthia.py, ZJULearning/MaxSquareLoss datasets/synthia_Dataset.py.
SYNTHIA = CITYSCAPES.derive("synthia", {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 10, 10: 11, 17: 12,
                                        8: 13, 19: 15, 12: 17, 11: 18}, ignore_values=range(23), scored=("16", "13"))

# The NTHU cities' test labels: Cityscapes label ids, only the 13 cross-city classes annotated.
NTHU = CITYSCAPES.derive("nthu", {value: train_id for value, train_id in CITYSCAPES.label_values.items()
                                  if train_id in _SUBSETS["crosscity13"]}, scored=("crosscity13",))

# Synscapes (Wrenninge and Unger, 2018): Cityscapes label ids in class/<n>.png, so the Cityscapes table.
SYNSCAPES = CITYSCAPES.derive("synscapes")

PRESETS = OrderedDict((preset.name, preset) for preset in (CITYSCAPES, SYNTHIA, NTHU, SYNSCAPES))


def _as_colour(value, where):
    if isinstance(value, str) and value.startswith("#") and len(value) == 7:
        return tuple(int(value[i:i + 2], 16) for i in (1, 3, 5))
    if isinstance(value, (list, tuple)) and len(value) == 3 and all(
            isinstance(c, int) and 0 <= c <= 255 for c in value):
        return tuple(value)
    raise ClassSetError("{}: colour {!r} is not [R, G, B] with values 0..255 nor '#rrggbb'".format(where, value))


def _read_mapping(path):
    with open(path, "rb") as handle:
        text = handle.read().decode("utf-8")
    if os.path.splitext(path)[1].lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ClassSetError("{}: reading YAML needs PyYAML (pip install pyyaml), or write the file as JSON"
                                .format(path))
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ClassSetError("{}: not valid YAML: {}".format(path, str(exc).replace("\n", " ")))
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ClassSetError("{}: not valid JSON: {}".format(path, exc))


def class_set_from_dict(data, where):
    """A ClassSet from the contents of a class file (see README, "Your own data")::

        {"name": "roads",
         "classes": [{"name": "road", "colour": [128, 64, 128], "values": [1, 2]},
                     {"name": "background", "colour": [0, 0, 0]}],
         "ignore": [255],
         "subsets": {"road only": ["road"]}, "scored": ["2", "road only"]}

    A class's ``values`` are the label values that mean it (default: its train id, the position
    in the list); ``ignore`` the values that mean "not labelled" (default [255]).
    """
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list) or not data["classes"]:
        raise ClassSetError("{}: expected a mapping with a non-empty list 'classes' of {{name, colour, values}}"
                            .format(where))
    names, colours, label_values = [], [], {}
    for train_id, entry in enumerate(data["classes"]):
        at = "{}: classes[{}]".format(where, train_id)
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise ClassSetError("{}: expected {{\"name\": ..., \"colour\": [r, g, b], \"values\": [...]}}".format(at))
        unknown = set(entry) - {"name", "colour", "color", "values"}
        if unknown:
            raise ClassSetError("{}: unknown key(s) {}".format(at, ", ".join(sorted(unknown))))
        if entry["name"] in names:
            raise ClassSetError("{}: class name {!r} appears twice".format(at, entry["name"]))
        names.append(entry["name"])
        colour = entry.get("colour", entry.get("color"))
        colours.append(_as_colour(colour, at) if colour is not None else None)
        values = entry.get("values", [train_id])
        values = [values] if isinstance(values, int) else values
        if not isinstance(values, list) or not all(isinstance(v, int) and 0 <= v < 65536 for v in values):
            raise ClassSetError("{}: values must be label values 0..65535, got {!r}".format(at, values))
        for value in values:
            if value in label_values:
                raise ClassSetError("{}: label value {} already means {!r}".format(
                    at, value, names[label_values[value]]))
            label_values[value] = train_id
    if len(names) > 255:
        raise ClassSetError("{}: {} classes; at most 255 fit the 8-bit train-id PNGs".format(where, len(names)))
    given = [c for c in colours if c is not None]
    if len(set(given)) != len(given):
        twice = next(c for c in given if given.count(c) > 1)
        raise ClassSetError("{}: colour {} is given to two classes ({}); colours must tell classes apart".format(
            where, list(twice), ", ".join(n for n, c in zip(names, colours) if c == twice)))
    spare = _spare_colours(set(given))
    colours = [c if c is not None else next(spare) for c in colours]
    ignore = data.get("ignore", [255])
    ignore = [ignore] if isinstance(ignore, int) else ignore
    if not isinstance(ignore, list) or not all(isinstance(v, int) and 0 <= v < 65536 for v in ignore):
        raise ClassSetError("{}: 'ignore' must be a label value or a list of them, got {!r}".format(where, ignore))
    clash = sorted(set(ignore) & set(label_values))
    if clash:
        raise ClassSetError("{}: label value {} is both ignored{} and class {!r}".format(
            where, clash[0], "" if "ignore" in data else " ('ignore' defaults to [255])",
            names[label_values[clash[0]]]))
    subsets = OrderedDict()
    for key, members in (data.get("subsets") or {}).items():
        missing = [m for m in members if m not in names]
        if missing:
            raise ClassSetError("{}: subset {!r} names unknown classes {}".format(
                where, key, ", ".join(map(str, missing))))
        subsets[str(key)] = tuple(names.index(m) for m in members)
    unknown = set(data) - {"name", "classes", "ignore", "subsets", "scored"}
    if unknown:
        raise ClassSetError("{}: unknown key(s) {}".format(where, ", ".join(sorted(unknown))))
    scored = [str(key) for key in data.get("scored") or ()]
    unknown = [key for key in scored if key != str(len(names)) and key not in subsets]
    if unknown:
        raise ClassSetError("{}: 'scored' names {}, which is neither a subset nor {!r} (all classes)".format(
            where, ", ".join(map(repr, unknown)), str(len(names))))
    return ClassSet(str(data.get("name") or "custom"), names, colours, label_values, ignore, subsets, scored or None)


def _spare_colours(taken):
    """Colours for classes without one, none of ``taken`` nor black: the Cityscapes colours first,
    then 24-bit colours in a fixed scattered order (an odd multiplier permutes them all)."""
    taken = set(taken) | {(0, 0, 0)}
    for _, _, colour in _CITYSCAPES:
        if colour not in taken:
            taken.add(colour)
            yield colour
    for step in range(1, 1 << 24):
        code = (step * 0x9E3779) & 0xFFFFFF
        colour = (code >> 16, (code >> 8) & 255, code & 255)
        if colour not in taken:
            taken.add(colour)
            yield colour


def load_class_file(path):
    """The ClassSet of a JSON or YAML class file; errors name the file and the key."""
    if not os.path.isfile(path):
        raise ClassSetError("--classes {}: no such file".format(path))
    classes = class_set_from_dict(_read_mapping(path), path)
    classes.path = path
    return classes


def class_set_from_record(record):
    """The set a run recorded (ClassSet.record): a preset by its name, else rebuilt from the record."""
    preset = PRESETS.get(record.get("name"))
    if preset is not None and list(preset.names) == list(record["names"]):
        return preset
    values = {int(value): int(train_id) for value, train_id in record.get("values", ())} or None
    return ClassSet(record.get("name", "custom"), record["names"], record["colours"], values,
                    record.get("ignore", ()), record.get("subsets"), record.get("scored"))


def model_classes(record, class_file=None, num_classes=None, what="the model"):
    """The ClassSet of a trained model: ``class_file`` (--classes) if given, checked against the
    ``record`` beside the model; else the record; else the 19 Cityscapes classes (the authors'
    files have no record). ``num_classes`` (--num-classes) must agree."""
    if class_file:
        classes = load_class_file(class_file)
        classes.check_model_classes(record, what)
    else:
        classes = CITYSCAPES if record is None else class_set_from_record(record)
    classes.check_num_classes(num_classes)
    return classes
