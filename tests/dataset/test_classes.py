"""Class sets as data: the class file a user writes, and the benchmark's sets as instances."""
import json

import numpy as np
import pytest

from dataset.classes import CITYSCAPES, NTHU, SYNTHIA, ClassSetError, load_class_file

ROADS = {"name": "roads", "classes": [{"name": "road", "colour": [128, 64, 128], "values": [10, 11]},
                                      {"name": "car", "colour": "#00008e"},
                                      {"name": "background", "values": [7]}],
         "ignore": [0, 255], "subsets": {"moving": ["car"]}, "scored": ["3", "moving"]}


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_a_class_file_gives_names_colours_label_table_and_scored_subsets(tmp_path):
    classes = load_class_file(write(tmp_path, "roads.json", json.dumps(ROADS)))

    assert classes.names == ("road", "car", "background") and classes.num_classes == 3
    assert classes.colours[:2].tolist() == [[128, 64, 128], [0, 0, 142]]
    assert classes.colours[2].tolist() not in classes.colours[:2].tolist()  # a colour of its own
    expected = np.full(65536, 255)
    expected[[10, 11]], expected[1], expected[7] = 0, 1, 2  # car is meant by its train id, 1
    np.testing.assert_array_equal(classes.lut(65536), expected)
    assert classes.known_values() == {0, 1, 7, 10, 11, 255}
    assert classes.scored == ("3", "moving") and dict(classes.scored_subsets) == {"3": (0, 1, 2), "moving": (1,)}


def test_yaml_and_json_class_files_are_the_same_set(tmp_path):
    yaml = pytest.importorskip("yaml")
    from_json = load_class_file(write(tmp_path, "roads.json", json.dumps(ROADS)))
    from_yaml = load_class_file(write(tmp_path, "roads.yaml", yaml.safe_dump(ROADS)))
    assert from_yaml.record() == from_json.record()
    assert from_yaml.label_values == from_json.label_values and from_yaml.scored == from_json.scored


@pytest.mark.parametrize("change, message", [
    (lambda d: d["classes"].append({"name": "road"}), "class name 'road' appears twice"),
    (lambda d: d["classes"][2].update(values=[11]), "label value 11 already means 'road'"),
    (lambda d: d["classes"][2].update(colour=[128, 64, 128]), "colour [128, 64, 128] is given to two classes"),
    (lambda d: d.update(ignore=[7]), "label value 7 is both ignored and class 'background'"),
    (lambda d: d["classes"][0].update(colour=[300, 0, 0]), "classes[0]: colour [300, 0, 0] is not"),
    (lambda d: d.update(scored=["none"]), "'scored' names 'none', which is neither a subset"),
    (lambda d: d.update(colours=[]), "unknown key(s) colours"),
])
def test_a_wrong_class_file_is_one_line_naming_the_file_and_the_key(tmp_path, change, message):
    data = json.loads(json.dumps(ROADS))
    change(data)
    path = write(tmp_path, "bad.json", json.dumps(data))
    with pytest.raises(ClassSetError) as error:
        load_class_file(path)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert path in str(error.value)


def test_the_benchmark_sets_are_instances_scored_on_their_subsets():
    assert SYNTHIA.names == NTHU.names == CITYSCAPES.names
    assert CITYSCAPES.scored == ("19",) and SYNTHIA.scored == ("16", "13") and NTHU.scored == ("crosscity13",)
    # SYNTHIA's ids of void and lane marking are known and ignored; NTHU ignores the 6 classes it does not label.
    assert SYNTHIA.lut()[0] == SYNTHIA.lut()[22] == 255 and 0 in SYNTHIA.known_values()
    wall = CITYSCAPES.names.index("wall")
    wall_id = next(v for v, t in CITYSCAPES.label_values.items() if t == wall)
    assert CITYSCAPES.lut()[wall_id] == wall and NTHU.lut()[wall_id] == 255 and wall_id in NTHU.known_values()


def test_classes_without_colours_get_distinct_ones_however_many_are_given(tmp_path):
    given = [[c, 255 - c, (7 * c) % 256] for c in range(254)]
    spec = {"classes": [{"name": "c{}".format(i), "colour": colour} for i, colour in enumerate(given)] + [{"name": "x"}]}
    classes = load_class_file(write(tmp_path, "many.json", json.dumps(spec)))
    colours = [tuple(c) for c in classes.colours.tolist()]
    assert len(set(colours)) == 255 and (0, 0, 0) not in colours[-1:]
