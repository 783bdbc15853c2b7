"""How the code base holds together: shipped code does not depend on the tests, numpy-only tools
do not load Paddle, Paddle's start-up noise does not reach users, and importing the packages sets
up no more than utils/runtime.py documents."""
import ast
import glob
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.paddle_api  # run on Paddle 2.6 too (README: the paddle-2.6 leg)


def shipped_sources():
    """(path, Python source) of every module and notebook cell outside tests/."""
    for path in sorted(glob.glob(os.path.join(ROOT, "**", "*.py"), recursive=True)):
        relative = os.path.relpath(path, ROOT)
        if not relative.startswith(("tests" + os.sep, ".")):
            with open(path) as f:
                yield relative, f.read()
    for path in sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb"))):
        with open(path) as f:
            cells = json.load(f)["cells"]
        code = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
        yield os.path.relpath(path, ROOT), code


def imported_modules(source):
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


def test_no_shipped_module_imports_the_tests():
    offenders = {path: sorted(m for m in imported_modules(source) if m == "tests" or m.startswith("tests."))
                 for path, source in shipped_sources()}
    assert not {path: modules for path, modules in offenders.items() if modules}


# The floors of the house, lowest first: a module may import its own floor and those below, never
# one above. The foundation (runtime, files, signals, argument types) is what everything imports.
FLOORS = [
    ("foundation", ("utils/runtime.py", "utils/cli.py", "utils/stopping.py", "utils/files/", "utils/environment.py",
                    "utils/health.py")),
    ("networks and data", ("model/", "dataset/", "utils/loss.py")),
    ("engine, evaluation and deployment", ("utils/training/", "utils/evaluation/", "utils/prediction/",
                                           "utils/convert_weights.py")),
    ("methods", ("utils/methods/",)),
    ("applications", ("train_", "evaluate_cityscapes.py", "predict.py", "export.py", "compute_iou.py", "utils/demo/",
                      "bench/", "notebooks/", "report.py", "utils/report/")),
]


def floor_of(path_or_module):
    path = path_or_module if path_or_module.endswith((".py", ".ipynb")) else \
        path_or_module.replace(".", "/") + ".py"
    for number, (_, prefixes) in enumerate(FLOORS):
        if path.replace(os.sep, "/").startswith(prefixes):
            return number
    return None


def test_imports_point_down_the_floors_never_up():
    upward = []
    for path, source in shipped_sources():
        here = floor_of(path)
        for module in imported_modules(source):
            there = floor_of(module)
            if here is not None and there is not None and there > here:
                upward.append("{} ({}) imports {} ({})".format(path, FLOORS[here][0], module, FLOORS[there][0]))
    assert not upward
    assert floor_of("utils.files.download") == 0 and floor_of("utils/training/session.py") == 2  # the map itself
    assert floor_of("utils.methods.adaptsegnet") == 3 and floor_of("train_weak_labels.py") == 4


def run_python(code):
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=300)


def test_numpy_only_tools_do_not_load_paddle():
    result = run_python("import sys, compute_iou, utils.evaluation.metrics, dataset.classes, dataset.files, "
                        "dataset.weak_labels, dataset.sources, utils.files.snapshots, utils.health, utils.environment\n"
                        "print('paddle' in sys.modules)")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().strip() == "False"


def test_paddle_start_up_noise_does_not_reach_users(tmp_path):
    """The OMP_NUM_THREADS warning at import, the ccache warning, and the PIR warning of the export
    behind Paddle Inference."""
    code = ("import utils.runtime, numpy as np\n"
            "from model.deeplab_multi import ResNetMulti\n"
            "from model.inference import SegmentationPredictor\n"
            "net = ResNetMulti([1, 1, 1, 1], 19)\n"
            "SegmentationPredictor(net, 'inference')(np.zeros((1, 3, 32, 32), np.float32))\n"
            "print('ran')")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, timeout=300)
    stderr = result.stderr.decode()
    assert result.returncode == 0 and result.stdout.decode().strip() == "ran", stderr
    for noise in ("OMP_NUM_THREADS", "ccache", "not support input out tensor"):
        assert noise not in stderr


SNAPSHOT = ("import json, os, sys\n"
            "start = dict(os.environ), [repr(type(f)) for f in sys.meta_path]\n"
            "def changes():\n"
            "    env = {k: v for k, v in os.environ.items() if start[0].get(k) != v}\n"
            "    gone = sorted(set(start[0]) - set(os.environ))\n"
            "    return dict(env=env, gone=gone, finders=[repr(type(f)) for f in sys.meta_path][len(start[1]):],\n"
            "                same_finders=[repr(type(f)) for f in sys.meta_path][:len(start[1])] == start[1],\n"
            "                paddle='paddle' in sys.modules)\n")


def run_snapshots(code, env):
    """The changes() the code prints, one JSON line each, and its stderr."""
    result = subprocess.run([sys.executable, "-c", SNAPSHOT + code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, timeout=300)
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    return [json.loads(line) for line in result.stdout.decode().splitlines()], stderr


def test_importing_the_packages_installs_no_hook_and_sets_only_mkl_debug_cpu_type():
    """utils.runtime's documented variable is the only trace of our imports: the rest of what
    importing model leaves behind (finders, variables) is what ``import paddle`` alone leaves."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_DEBUG_CPU_TYPE")}
    (before_paddle, after_model), stderr = run_snapshots(
        "import utils, dataset\nprint(json.dumps(changes()))\nimport model\nprint(json.dumps(changes()))", env)
    [paddle_alone], _ = run_snapshots("import PIL.Image, paddle\nprint(json.dumps(changes()))", env)
    documented = {"MKL_DEBUG_CPU_TYPE": "5"}
    assert before_paddle == dict(env=documented, gone=[], finders=[], same_finders=True, paddle=False)
    assert after_model["paddle"] and paddle_alone["paddle"]
    assert after_model["env"] == dict(paddle_alone["env"], **documented)
    assert after_model["gone"] == paddle_alone["gone"] == []
    assert after_model["finders"] == paddle_alone["finders"] and after_model["same_finders"]
    for noise in ("OMP_NUM_THREADS", "PLEASE USE", "ccache"):
        assert noise not in stderr


# utils.runtime before paddle, as the scripts import them; omp() is libiomp5's thread count (-1 without it).
OMP_PRELUDE = ("import ctypes, glob, os\n"
               "from utils.runtime import usable_cpus, use_cpu_cores\n"
               "import paddle\n"
               "found = glob.glob(os.path.join(os.path.dirname(paddle.__file__), 'libs', 'libiomp5.so'))\n"
               "omp = ctypes.CDLL(found[0]).omp_get_max_threads if found else lambda: -1\n")


def printed_with_omp(user_value, code):
    """What ``code`` prints (split) in a fresh process given ``OMP_NUM_THREADS=user_value`` (None:
    unset), after OMP_PRELUDE; its first word must be an omp() reading, -1 skipping the test."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if user_value is not None:
        env["OMP_NUM_THREADS"] = user_value
    result = subprocess.run([sys.executable, "-c", OMP_PRELUDE + code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, timeout=300)
    assert result.returncode == 0, result.stderr.decode()
    words = result.stdout.decode().split()
    if words[0] == "-1":
        pytest.skip("this Paddle has no libiomp5.so to ask for its thread count")
    return words


@pytest.mark.parametrize("user_value", [None, "3"])
def test_use_cpu_cores_gives_paddle_the_usable_cores_unless_the_user_chose(user_value):
    before, returned, after, usable, variable = printed_with_omp(user_value, (
        "before = omp()\n"
        "print(before, use_cpu_cores(), omp(), usable_cpus(), os.environ['OMP_NUM_THREADS'])"))
    if user_value is None:
        assert (before, returned, after, variable) == ("1", usable, usable, "1")
    else:
        assert (before, returned, after, variable) == (user_value, "None", user_value, user_value)


@pytest.mark.parametrize("user_value", [None, "1", "3"])
def test_a_predictor_leaves_the_process_thread_count_as_it_was(user_value):
    """Evaluation inside training (--val) builds a Paddle Inference predictor, which sets the
    process's thread count: a different one would change every training step after it."""
    before, after = printed_with_omp(user_value, (
        "import numpy as np\n"
        "from model.deeplab_multi import ResNetMulti\n"
        "from model.inference import SegmentationPredictor\n"
        "paddle.set_device('cpu')\n"
        "use_cpu_cores()\n"
        "before = omp()\n"
        "net = ResNetMulti([1, 1, 1, 1], num_classes=3)  # its depth does not matter here\n"
        "net.eval()\n"
        "predict = SegmentationPredictor(net, backend='inference')\n"
        "predict(np.zeros((1, 3, 33, 33), np.float32))\n"
        "print(before, omp())"))
    assert after == before
    if user_value is not None:
        assert before == user_value


@pytest.mark.parametrize("files, affinity, expected", [
    ({}, 4, 4),
    ({"cpu.max": "max 100000\n"}, 4, 4),
    ({"cpu.max": "250000 100000\n"}, 4, 2),
    ({"cpu.max": "200000 100000\n"}, 1, 1),
    ({"cpu.max": "50000 100000\n"}, 4, 1),
    ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 8, 3),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, 8, 8),
    ({"cpu.max": "max 100000\n", "cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 8, 8),
    ({}, None, 6),
])
def test_usable_cpus_is_the_affinity_capped_by_the_cgroup_quota(tmp_path, monkeypatch, files, affinity, expected):
    """affinity None: a platform without os.sched_getaffinity, where os.cpu_count() (here 6) stands in."""
    from utils.runtime import usable_cpus
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    if affinity is None:
        monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    else:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(affinity)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert usable_cpus(str(tmp_path)) == expected
