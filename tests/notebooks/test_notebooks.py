"""The AI Studio notebooks, run headless in DEMO mode as a user would run them, one after the other;
and notebooks.aistudio.datasets' archive preparation on small archives made here.

The notebooks are executed with nbclient after their parameters cell is given DEMO = True and a
WORK_DIR under pytest's tmp directory; everything else is the committed notebook. The kernels
build the self-test network (utils/runtime.py): what is tested is the cells, not the network.
"""
import glob
import json
import os
import re
import shutil
import sys
import time
import zipfile

from PIL import Image

import nbformat
import numpy as np
import pytest
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient
from traitlets import default

from notebooks.aistudio import commands, datasets, training
from notebooks.aistudio.demo import DEMO_WEIGHTS_SEED
from notebooks.clear_outputs import clear_outputs
from tests.helpers import ROOT
from utils.files.snapshots import SnapshotDir

NOTEBOOK_DIR = os.path.join(ROOT, "notebooks")
NOTEBOOKS = ("01_prepare_data_and_weights.ipynb", "02_train_and_continue.ipynb", "03_evaluate_and_visualise.ipynb",
             "04_weak_labels.ipynb")
# The notebooks each one needs to have run first, on the same WORK_DIR.
NEEDS = {NOTEBOOKS[1]: NOTEBOOKS[:1], NOTEBOOKS[2]: NOTEBOOKS[:2], NOTEBOOKS[3]: NOTEBOOKS[:1]}
SELF_TEST_NETWORK = True
CELL_TIMEOUT = 300  # seconds; the longest DEMO cells (training, notebooks 2 and 4) take about 10 on 2 cores
# DEMO mode's settings, as the notebooks set them.
DEMO_FIRST_STOP, DEMO_NUM_STEPS_STOP, DEMO_SAVE_EVERY = 2, 4, 2
DEMO_GTA5_IMAGES, DEMO_TRAIN_IMAGES, DEMO_VAL_IMAGES, DEMO_PICTURES = 20, 10, 6, 3


# -- running a notebook ------------------------------------------------------------------------

def parameters_cell(notebook):
    tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell must be tagged 'parameters'"
    return tagged[0]


def with_parameters(notebook, **values):
    """The notebook with ``NAME = value`` lines of its parameters cell replaced (each must exist)."""
    cell = parameters_cell(notebook)
    for name, value in values.items():
        line = re.compile(r"^{}\s*=.*$".format(name), re.MULTILINE)
        assert len(line.findall(cell.source)) == 1, "parameter {} is not in the parameters cell".format(name)
        cell.source = line.sub(lambda _: "{} = {!r}".format(name, value), cell.source)
    return notebook


class ThisEnvironmentKernel(KernelManager):
    """Kernels of this environment only (its ipykernel runs this interpreter), not those that a
    Jupyter installed for the user elsewhere may define under the same name."""

    @default("kernel_spec_manager")
    def _kernel_spec_manager_default(self):
        return KernelSpecManager(kernel_dirs=[os.path.join(sys.prefix, "share", "jupyter", "kernels")])


def execute(notebook, save_as=None):
    """Run every cell in a fresh python3 kernel started in notebooks/; raises on a cell's error."""
    client = NotebookClient(notebook, kernel_manager_class=ThisEnvironmentKernel, kernel_name="python3",
                            timeout=CELL_TIMEOUT, resources={"metadata": {"path": NOTEBOOK_DIR}})
    try:
        client.execute()
    finally:
        if save_as:  # with its outputs, to read when a cell failed
            nbformat.write(notebook, save_as)
    return notebook


def text_output(notebook):
    return "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                   for output in cell.outputs if output.output_type == "stream")


def shown(notebook, mime_type):
    """What the notebook displayed of one kind (image/png, text/markdown...)."""
    return [output["data"][mime_type] for cell in notebook.cells if cell.cell_type == "code"
            for output in cell.outputs if mime_type in output.get("data", {})]


def files_below(directory, suffix):
    return sorted(glob.glob(os.path.join(directory, "**", "*" + suffix), recursive=True))


class DemoRun(object):
    """The notebooks in DEMO mode on one WORK_DIR, each run once when first asked for, after those it needs."""

    def __init__(self, work_dir, output_dir):
        self.work_dir, self.output_dir = work_dir, output_dir
        self.executed, self.seconds, self.failed = {}, {}, set()

    def notebook(self, name):
        for earlier in NEEDS.get(name, ()):
            self.notebook(earlier)
        if name in self.failed:
            pytest.fail("{} failed in an earlier test; its outputs are in {}".format(name, self.output_dir))
        if name not in self.executed:
            notebook = with_parameters(nbformat.read(os.path.join(NOTEBOOK_DIR, name), as_version=4),
                                       DEMO=True, WORK_DIR=self.work_dir)
            start = time.time()
            try:
                self.executed[name] = execute(notebook, os.path.join(self.output_dir, name))
            except Exception:
                self.failed.add(name)
                raise
            self.seconds[name] = time.time() - start
            print("\n{}: {:.0f} s".format(name, self.seconds[name]))
        return self.executed[name]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    run = DemoRun(str(tmp_path_factory.mktemp("aistudio_work")), str(tmp_path_factory.mktemp("executed")))
    yield run
    # The weights and snapshots go; the executed notebooks (with outputs) stay.
    shutil.rmtree(run.work_dir, ignore_errors=True)


# -- the notebooks, executed -------------------------------------------------------------------

@pytest.mark.slow
def test_kernel_runs_this_interpreter():
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys\nprint(sys.executable)")])
    assert text_output(execute(notebook)).strip() == sys.executable


@pytest.mark.slow
def test_01_extracts_the_archives_and_converts_both_weight_files(demo):
    import paddle

    from model import build_model
    from utils.files.weights import read_weights

    output = text_output(demo.notebook(NOTEBOOKS[0]))
    data = os.path.join(demo.work_dir, "data")
    for folder, count in (("GTA5/images", DEMO_GTA5_IMAGES), ("GTA5/labels", DEMO_GTA5_IMAGES),
                          ("Cityscapes/leftImg8bit/train", DEMO_TRAIN_IMAGES),
                          ("Cityscapes/leftImg8bit/val", DEMO_VAL_IMAGES),
                          ("Cityscapes/gtFine/train", DEMO_TRAIN_IMAGES),  # the weak labels of notebook 4
                          ("Cityscapes/gtFine/val", DEMO_VAL_IMAGES)):
        assert len(files_below(os.path.join(data, folder), ".png")) == count, folder
    # The demo archives' test split and colour labels were left out.
    assert not os.path.exists(os.path.join(data, "Cityscapes", "leftImg8bit", "test"))
    assert files_below(os.path.join(data, "Cityscapes", "gtFine"), "_gtFine_color.png") == []
    assert "10_images.zip: 2 extracted" in output
    assert "gtFine_trainvaltest.zip: {} extracted".format(DEMO_TRAIN_IMAGES + DEMO_VAL_IMAGES) in output
    # every sample the extraction wrote was decoded: GTA5 pairs, Cityscapes train and val images
    assert "decoded {} newly extracted samples: all readable".format(
        DEMO_GTA5_IMAGES + DEMO_TRAIN_IMAGES + DEMO_VAL_IMAGES) in output
    # Notebook 4 converts the third stand-in, the weak-label paper's GTA5 source-only model.
    assert os.path.isfile(os.path.join(demo.work_dir, "demo_archives", "data1003", "gta5_pretrained.pth"))

    weights = os.path.join(demo.work_dir, "weights")
    paddle.seed(DEMO_WEIGHTS_SEED)
    model = build_model("DeeplabMulti")
    stand_in = {name: value.numpy() for name, value in model.state_dict().items()}
    released = read_weights(os.path.join(weights, "GTA2Cityscapes_multi-ed35151c.pdparams"), model)
    assert released.kind == "paddle" and len(released.params) == len(model.state_dict())
    np.testing.assert_array_equal(released.params["layer6.conv2d_list.0.weight"],
                                  stand_in["layer6.conv2d_list.0.weight"])
    init = read_weights(os.path.join(weights, "DeepLab_resnet_pretrained_init-f81d91e8.pdparams"), model,
                        allow_fresh=("layer5.", "layer6."))
    assert init.fresh == ["layer5.", "layer6."]
    np.testing.assert_array_equal(init.params["conv1.weight"], stand_in["conv1.weight"])


@pytest.mark.slow
def test_02_trains_stops_and_continues_from_the_latest_snapshot(demo):
    output = text_output(demo.notebook(NOTEBOOKS[1]))
    snapshots = os.path.join(demo.work_dir, "snapshots", "GTA2Cityscapes_multi")
    assert SnapshotDir.detect(snapshots).latest() == DEMO_NUM_STEPS_STOP > DEMO_FIRST_STOP
    for iteration in range(DEMO_SAVE_EVERY, DEMO_NUM_STEPS_STOP + 1, DEMO_SAVE_EVERY):
        for suffix in (".pdparams", "_D1.pdparams", "_D2.pdparams", "_state.pdopt"):
            assert os.path.isfile(os.path.join(snapshots, "GTA5_{}{}".format(iteration, suffix)))
    assert "--continue-train" in output
    assert "resumed from GTA5_{0} at iteration {0}".format(DEMO_FIRST_STOP) in output
    assert os.path.isfile(os.path.join(snapshots, "GTA5_best.pdparams"))  # VALIDATE is on in DEMO mode
    with open(os.path.join(snapshots, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    # A line per iteration with its losses, and one per validated snapshot with its score.
    assert [r["step"] for r in records if "loss/seg2" in r["scalars"]] == list(range(1, DEMO_NUM_STEPS_STOP + 1))
    assert [r["step"] for r in records if "val/mIoU" in r["scalars"]] == list(
        range(DEMO_SAVE_EVERY, DEMO_NUM_STEPS_STOP + 1, DEMO_SAVE_EVERY))
    assert os.path.getsize(os.path.join(snapshots, "losses.png")) > 0
    assert len(shown(demo.executed[NOTEBOOKS[1]], "image/png")) == 2  # the losses and the latest prediction


@pytest.mark.slow
def test_02_trains_advent_with_the_same_cells(demo):
    """METHOD = "advent": ADVENT's MinEnt (its own recipe, four-branch network) in the same cells."""
    demo.notebook(NOTEBOOKS[0])
    snapshots = os.path.join(demo.work_dir, "snapshots", "minent")
    notebook = with_parameters(nbformat.read(os.path.join(NOTEBOOK_DIR, NOTEBOOKS[1]), as_version=4), DEMO=True,
                               WORK_DIR=demo.work_dir, METHOD="advent", DA_METHOD="MinEnt", RECIPE="advent",
                               SNAPSHOT_DIR=snapshots)
    output = text_output(execute(notebook, os.path.join(demo.output_dir, "02_advent.ipynb")))
    assert "python -m utils.methods advent --da-method MinEnt" in output
    assert "resumed from GTA5_{0} at iteration {0}".format(DEMO_FIRST_STOP) in output
    assert SnapshotDir.detect(snapshots).latest() == DEMO_NUM_STEPS_STOP
    assert not glob.glob(os.path.join(snapshots, "*_D1.pdparams"))  # MinEnt has no discriminator
    with open(os.path.join(snapshots, "metrics.jsonl")) as f:
        losses = [json.loads(line)["scalars"] for line in f]
    assert "loss/ent_trg_main" in losses[0]
    assert os.path.getsize(os.path.join(snapshots, "losses.png")) > 0  # ADVENT's panels


@pytest.mark.slow
def test_03_scores_every_snapshot_and_draws_pictures(demo):
    notebook = demo.notebook(NOTEBOOKS[2])
    snapshots = os.path.join(demo.work_dir, "snapshots", "GTA2Cityscapes_multi")
    # Notebook 2 validated every snapshot with the same settings: nothing is evaluated again.
    assert text_output(notebook).count("(cached in") == DEMO_NUM_STEPS_STOP // DEMO_SAVE_EVERY
    results = os.path.join(demo.work_dir, "results")
    with open(os.path.join(snapshots, "snapshots_mIoU.json")) as f:
        table = json.load(f)
    assert sorted(table["mIoU"], key=int) == [str(i) for i in range(DEMO_SAVE_EVERY, DEMO_NUM_STEPS_STOP + 1,
                                                                    DEMO_SAVE_EVERY)]
    assert table["best_mIoU"] == max(table["mIoU"].values())
    assert os.path.isfile(os.path.join(snapshots, "GTA5_best.pdparams"))
    with open(os.path.join(results, "released", "mIoU.json")) as f:
        assert 0.0 <= json.load(f)["mIoU"] <= 1.0
    assert len(files_below(os.path.join(results, "best"), "_color.png")) == DEMO_VAL_IMAGES

    pictures = files_below(os.path.join(results, "pictures"), ".png")
    assert len(pictures) == DEMO_PICTURES
    with Image.open(pictures[0]) as row:
        # image, ground truth, released model, best snapshot: 128 px wide each, 8 px apart
        assert row.size == (4 * 128 + 3 * 8, 64)
    # The validation images stand in for your own: predict.py's outputs of each, and their grid.
    own = os.path.join(results, "own_images")
    assert len(files_below(os.path.join(own, "pseudo_color_prediction"), ".png")) == DEMO_VAL_IMAGES
    assert len(files_below(os.path.join(own, "confidence"), ".png")) == DEMO_VAL_IMAGES
    assert len(shown(notebook, "image/png")) == 3  # the mIoU plot, the pictures and your own images
    table_shown, report_shown = shown(notebook, "text/markdown")
    assert table_shown.startswith("| iteration | mIoU |")
    assert "GTA2Cityscapes_multi" in report_shown and "mIoU" in report_shown  # the run's report, inline


@pytest.mark.slow
def test_04_trains_with_weak_labels_continues_and_evaluates(demo):
    import paddle

    from model import build_model
    from utils.files.weights import read_weights

    notebook = demo.notebook(NOTEBOOKS[3])
    output = text_output(notebook)
    # The stand-in for gta5_pretrained.pth was found and converted: training started from it.
    paddle.seed(DEMO_WEIGHTS_SEED + 1)
    model = build_model("DeeplabMulti")
    converted = read_weights(os.path.join(demo.work_dir, "weights", "gta5_pretrained.pdparams"), model)
    np.testing.assert_array_equal(converted.params["layer6.conv2d_list.0.weight"],
                                  model.state_dict()["layer6.conv2d_list.0.weight"].numpy())

    # DEMO mode: one point per class, no category-wise alignment; a first session stopped at 2, continued.
    snapshots = os.path.join(demo.work_dir, "snapshots", "weak_point")
    assert "weak-label method: ground-truth weak labels, weak loss, points" in output
    assert SnapshotDir.detect(snapshots).latest() == DEMO_NUM_STEPS_STOP > DEMO_FIRST_STOP
    for iteration in range(DEMO_SAVE_EVERY, DEMO_NUM_STEPS_STOP + 1, DEMO_SAVE_EVERY):
        for suffix in (".pdparams", "_D2.pdparams", "_state.pdopt"):
            assert os.path.isfile(os.path.join(snapshots, "GTA5_{}{}".format(iteration, suffix)))
    assert files_below(snapshots, "_cwD.pdparams") == []
    assert "resumed from GTA5_{0} at iteration {0}".format(DEMO_FIRST_STOP) in output

    metrics = training.read_metrics(snapshots)
    for tag in ("loss/weak", "loss/point", "loss/present"):
        steps, values = metrics[tag]
        assert steps == list(range(1, DEMO_NUM_STEPS_STOP + 1)), tag
        assert all(value > 0 for value in values), tag  # the target labels and points were read
    assert os.path.getsize(os.path.join(snapshots, "losses.png")) > 0

    result = os.path.join(demo.work_dir, "results", "weak_point")
    with open(os.path.join(result, "mIoU.json")) as f:
        miou = json.load(f)["mIoU"]
    assert 0.0 <= miou <= 1.0
    assert "GTA5_{} of weak_point: mIoU {:.2f} on Cityscapes val".format(DEMO_NUM_STEPS_STOP, miou * 100) in output
    assert len(files_below(result + "_pictures", ".png")) == DEMO_PICTURES
    assert len(shown(notebook, "image/png")) == 2  # the losses and the pictures


# -- the committed notebooks -------------------------------------------------------------------

def test_every_notebook_is_tested():
    assert sorted(name for name in os.listdir(NOTEBOOK_DIR) if name.endswith(".ipynb")) == list(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_has_no_outputs_and_one_parameters_cell_first(name):
    notebook = nbformat.read(os.path.join(NOTEBOOK_DIR, name), as_version=4)
    nbformat.validate(notebook)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    dirty = [index for index, cell in enumerate(code_cells) if cell.outputs or cell.execution_count is not None]
    assert not dirty, ("{}: code cells {} hold outputs or execution counts; clear them before committing: "
                       "python -m notebooks.clear_outputs notebooks/{}".format(name, dirty, name))
    assert parameters_cell(notebook) is code_cells[0]
    assert re.search(r"^DEMO = False\b", code_cells[0].source, re.MULTILINE)
    assert notebook.metadata.kernelspec.name == "python3"


def test_clear_outputs_leaves_a_notebook_as_committed(tmp_path):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(1)", execution_count=3, outputs=[
        nbformat.v4.new_output("stream", name="stdout", text="1\n")])])
    path = str(tmp_path / "run.ipynb")
    nbformat.write(notebook, path)
    clear_outputs([path])
    cell = nbformat.read(path, as_version=4).cells[0]
    assert cell.outputs == [] and cell.execution_count is None and cell.source == "print(1)"


# -- archive preparation -----------------------------------------------------------------------

def write_zip(path, members):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def fake_ai_studio_mount(root, parts=3):
    """GTA5 in ``parts`` parts and the two Cityscapes archives, as AI Studio mounts them (bytes, not PNGs)."""
    for part in range(1, parts + 1):
        names = ["{:05d}.png".format(2 * part - 1), "{:05d}.png".format(2 * part)]
        write_zip(os.path.join(root, "data1001", "{:02d}_images.zip".format(part)),
                  {"images/" + n: b"image " + n.encode() for n in names})
        write_zip(os.path.join(root, "data1001", "{:02d}_labels.zip".format(part)),
                  {"labels/" + n: b"label " + n.encode() for n in names})
    stems = ["aachen/aachen_000000_000019", "frankfurt/frankfurt_000000_000294"]
    write_zip(os.path.join(root, "data1002", "leftImg8bit_trainvaltest.zip"), dict(
        [("README", b"readme"), ("leftImg8bit/test/berlin/berlin_000000_000019_leftImg8bit.png", b"test")] +
        [("leftImg8bit/{}/{}_leftImg8bit.png".format(split, stem), b"image")
         for split, stem in zip(("train", "val"), stems)]))
    write_zip(os.path.join(root, "data1002", "gtFine_trainvaltest.zip"), {
        "gtFine/val/{}_gtFine_labelIds.png".format(stems[1]): b"label ids",
        "gtFine/val/{}_gtFine_color.png".format(stems[1]): b"colours",
        "gtFine/train/{}_gtFine_labelIds.png".format(stems[0]): b"train labels"})


def archive_groups(parts=3):
    return [
        datasets.ArchiveGroup("GTA5 images", "**/*_images.zip", parts, datasets.gta5_files("images")),
        datasets.ArchiveGroup("GTA5 labels", "**/*_labels.zip", parts, datasets.gta5_files("labels")),
        datasets.ArchiveGroup("Cityscapes images", "**/leftImg8bit_trainvaltest.zip", 1,
                              datasets.cityscapes_files("leftImg8bit", ("train", "val"), "_leftImg8bit.png")),
        datasets.ArchiveGroup("Cityscapes labels", "**/gtFine_trainvaltest.zip", 1,
                              datasets.cityscapes_files("gtFine", ("train", "val"), "_gtFine_labelIds.png")),
    ]


def prepare(archive_dir, data_dir, parts=3):
    return datasets.extract_archives(datasets.find_archives(archive_dir, archive_groups(parts)), data_dir,
                                     progress=False)


def test_extraction_writes_the_layout_and_a_rerun_extracts_nothing(tmp_path):
    archives, data = str(tmp_path / "mounted"), str(tmp_path / "data")
    fake_ai_studio_mount(archives)
    first = prepare(archives, data)
    assert (first.extracted, first.skipped) == (6 + 6 + 2 + 2, 0)
    counts = datasets.check_layout(os.path.join(data, "GTA5"), os.path.join(data, "Cityscapes"))
    assert list(counts.values()) == [6, 6, 1, 1, 1]
    with open(os.path.join(data, "GTA5", "labels", "00004.png"), "rb") as f:
        assert f.read() == b"label 00004.png"
    assert not os.path.exists(os.path.join(data, "Cityscapes", "leftImg8bit", "test"))
    assert sorted(os.listdir(os.path.join(data, "Cityscapes", "gtFine"))) == ["train", "val"]
    assert not os.path.exists(os.path.join(data, "Cityscapes", "gtFine", "val", "frankfurt",
                                           "frankfurt_000000_000294_gtFine_color.png"))

    again = prepare(archives, data)
    assert (again.extracted, again.skipped) == (0, first.extracted)


def test_a_file_cut_short_is_extracted_again(tmp_path):
    archives, data = str(tmp_path / "mounted"), str(tmp_path / "data")
    fake_ai_studio_mount(archives)
    prepare(archives, data)
    cut = os.path.join(data, "GTA5", "images", "00003.png")
    with open(cut, "r+b") as f:
        f.truncate(3)
    again = prepare(archives, data)
    assert again.extracted == 1
    assert again.per_archive[os.path.join(archives, "data1001", "02_images.zip")] == (1, 1)
    with open(cut, "rb") as f:
        assert f.read() == b"image 00003.png"


def test_a_missing_part_is_named_with_the_pattern_and_what_was_found(tmp_path):
    archives = str(tmp_path / "mounted")
    fake_ai_studio_mount(archives, parts=3)
    os.remove(os.path.join(archives, "data1001", "02_images.zip"))
    with pytest.raises(datasets.ArchiveError) as error:
        datasets.find_archives(archives, archive_groups(parts=3))
    message = str(error.value)
    assert "GTA5 images: expected 3 parts numbered 1..3 matching {}".format(
        os.path.join(archives, "**/*_images.zip")) in message
    assert "found 2: data1001/01_images.zip, data1001/03_images.zip" in message
    assert "missing: part 2 (02_images.zip)" in message
    assert "GTA5 labels" not in message


@pytest.mark.parametrize("name, part", [("01_images.zip", 1), ("10_labels.zip", 10),
                                        ("GTA5_images_part3.zip", 3), ("GTA5_images.zip", None)])
def test_part_numbers_are_read_from_the_names(name, part):
    assert datasets._part_number(os.path.join("data1001", name)) == part


def test_a_missing_archive_lists_the_archives_that_are_there(tmp_path):
    archives = str(tmp_path / "mounted")
    fake_ai_studio_mount(archives)
    os.remove(os.path.join(archives, "data1002", "gtFine_trainvaltest.zip"))
    with pytest.raises(datasets.ArchiveError) as error:
        datasets.find_archives(archives, archive_groups())
    message = str(error.value)
    assert "Cityscapes labels: no archive matches {}".format(
        os.path.join(archives, "**/gtFine_trainvaltest.zip")) in message
    assert "data1002/leftImg8bit_trainvaltest.zip" in message


def test_gta5_parts_may_nest_their_files_anywhere(tmp_path):
    archives, data = str(tmp_path / "mounted"), str(tmp_path / "data")
    write_zip(os.path.join(archives, "data7", "GTA5_part1.zip"), {
        "GTA5/images/00001.png": b"image", "GTA5/labels/00001.png": b"label", "__MACOSX/GTA5/._x.png": b"junk"})
    groups = [datasets.ArchiveGroup("GTA5 images", "**/GTA5_part*.zip", 1, datasets.gta5_files("images")),
              datasets.ArchiveGroup("GTA5 labels", "**/GTA5_part*.zip", 1, datasets.gta5_files("labels"))]
    datasets.extract_archives(datasets.find_archives(archives, groups), data, progress=False)
    assert datasets.check_layout(os.path.join(data, "GTA5")) == {"GTA5 images": 1, "GTA5 labels": 1}


def test_check_layout_names_the_images_without_labels(tmp_path):
    archives, data = str(tmp_path / "mounted"), str(tmp_path / "data")
    fake_ai_studio_mount(archives)
    prepare(archives, data)
    os.remove(os.path.join(data, "GTA5", "labels", "00005.png"))
    with pytest.raises(datasets.DatasetError, match=r"1 GTA5 images have no label in .*labels: 00005.png"):
        datasets.check_layout(os.path.join(data, "GTA5"), os.path.join(data, "Cityscapes"))


def test_check_layout_names_the_target_training_images_without_labels(tmp_path):
    archives, data = str(tmp_path / "mounted"), str(tmp_path / "data")
    fake_ai_studio_mount(archives)
    prepare(archives, data)
    cityscapes = os.path.join(data, "Cityscapes")
    assert datasets.check_layout(cityscapes_dir=cityscapes, label_splits=("train", "val")) == {
        "Cityscapes train images": 1, "Cityscapes train labels": 1, "Cityscapes val images": 1,
        "Cityscapes val labels": 1}
    os.remove(os.path.join(cityscapes, "gtFine", "train", "aachen", "aachen_000000_000019_gtFine_labelIds.png"))
    assert datasets.check_layout(cityscapes_dir=cityscapes)["Cityscapes val labels"] == 1  # enough to evaluate
    with pytest.raises(datasets.DatasetError, match=r"1 Cityscapes train images have no labels in .*train: "
                                                    r"aachen/aachen_000000_000019_gtFine_labelIds.png"):
        datasets.check_layout(cityscapes_dir=cityscapes, label_splits=("train", "val"))


def test_check_translated_names_the_gta5_images_without_a_translation(tmp_path):
    gta5, translated = tmp_path / "GTA5", tmp_path / "cycleGAN_output" / "gta5_deeplab"
    for folder, names in ((gta5 / "images", ("00001.png", "00002.png")), (translated / "images", ("00001.png",))):
        folder.mkdir(parents=True)
        for name in names:
            (folder / name).write_bytes(b"png")
    with pytest.raises(datasets.DatasetError, match=r"1 of the 2 GTA5 images have no translation in .*: 00002.png"):
        datasets.check_translated(str(gta5), str(translated))
    (translated / "images" / "00002.png").write_bytes(b"png")
    assert datasets.check_translated(str(gta5), str(translated)) == 2


def test_run_streams_the_output_and_raises_with_the_exit_code(capsys):
    commands.run(["-c", "print('hello from', __import__('os').getcwd())"])
    assert "hello from {}".format(ROOT) in capsys.readouterr().out
    with pytest.raises(commands.CommandFailed) as error:
        commands.run(["-c", "import sys; print('progress'); sys.exit('error: the reason')"])
    assert error.value.returncode == 1
    assert "error: the reason" in str(error.value)


def test_check_extracted_decodes_only_what_this_extraction_wrote(tmp_path):
    from dataset.synthetic import make_synthetic
    gta5, _ = make_synthetic(str(tmp_path / "data"), num_source=3, num_target_train=1, num_target_val=1)
    report = datasets.ExtractionReport()
    assert datasets.check_extracted(report, str(tmp_path / "data")) == 0  # nothing new: nothing decoded
    damaged = os.path.join(gta5, "images", "00002.png")
    with open(damaged, "r+b") as f:
        f.truncate(50)
    report.written = [os.path.join(gta5, "labels", "00001.png")]
    assert datasets.check_extracted(report, str(tmp_path / "data")) == 1  # the damaged file is not among them
    report.written.append(damaged)
    with pytest.raises(ValueError, match="00002.png: cannot be decoded"):
        datasets.check_extracted(report, str(tmp_path / "data"))


@pytest.mark.slow
def test_interrupting_the_kernel_stops_training_with_a_snapshot_named_in_the_output(tmp_path, capsys):
    """The kernel's interrupt (a KeyboardInterrupt in run's loop) sends the command one SIGINT and
    waits: the run writes its snapshot and says which one the next session continues from."""
    import signal
    import threading
    from dataset.synthetic import make_synthetic
    from tests.helpers import logged_steps, training_args
    data = make_synthetic(str(tmp_path / "data"), num_source=4, num_target_train=2, num_target_val=1)
    run_dir = str(tmp_path / "run")

    given_up = threading.Event()

    def interrupt_the_kernel():
        deadline = time.time() + 240
        while logged_steps(run_dir) < 1 and time.time() < deadline and not given_up.is_set():
            time.sleep(0.05)
        if not given_up.is_set():
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_the_kernel, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            commands.run(["train_gta2cityscapes_multi.py"] + training_args(data, run_dir, 50, steps=100,
                                                                           save_every=100))
    finally:
        given_up.set()
    out = capsys.readouterr().out
    stopped = re.search(r"stopped on SIGINT at iteration (\d+): snapshot GTA5_\1 is complete\. Continue with: ", out)
    assert stopped, out[-2000:]
    assert SnapshotDir(run_dir).latest() == int(stopped.group(1))


def test_a_weights_file_missing_from_the_datasets_is_taken_from_its_url(tmp_path):
    from notebooks.aistudio import weights
    url = "http://127.0.0.1:9/GTA2Cityscapes_multi-ed35151c.pth"
    assert weights.find_file(str(tmp_path), "**/GTA2Cityscapes_multi-ed35151c.pth", "the model", url=url) == url
    with pytest.raises(FileNotFoundError, match="no file matches"):
        weights.find_file(str(tmp_path), "**/GTA2Cityscapes_multi-ed35151c.pth", "the model")
    (tmp_path / "data1").mkdir()
    (tmp_path / "data1" / "GTA2Cityscapes_multi-ed35151c.pth").write_bytes(b"x")
    assert weights.find_file(str(tmp_path), "**/GTA2Cityscapes_multi-ed35151c.pth", "the model", url=url) == str(
        tmp_path / "data1" / "GTA2Cityscapes_multi-ed35151c.pth")
