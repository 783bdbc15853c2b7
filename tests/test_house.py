"""How the code base holds together: shipped code does not depend on the tests, numpy-only tools
do not load Paddle, and Paddle's start-up noise does not reach users."""
import ast
import glob
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def run_python(code):
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=300)


def test_numpy_only_tools_do_not_load_paddle():
    result = run_python("import sys, compute_iou, utils.evaluation.metrics, dataset.classes, dataset.files, "
                        "dataset.weak_labels, dataset.sources, utils.files.snapshots\n"
                        "print('paddle' in sys.modules)")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().strip() == "False"


def test_paddle_start_up_noise_does_not_reach_users(tmp_path):
    """The OMP_NUM_THREADS warning at import, the ccache warning, and the PIR warning of the export
    behind Paddle Inference."""
    code = ("import utils.runtime, numpy as np\n"
            "from model import DeeplabMulti\n"
            "from model.inference import SegmentationPredictor\n"
            "SegmentationPredictor(DeeplabMulti(), 'inference')(np.zeros((1, 3, 32, 32), np.float32))\n"
            "print('ran')")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, timeout=300)
    stderr = result.stderr.decode()
    assert result.returncode == 0 and result.stdout.decode().strip() == "ran", stderr
    for noise in ("OMP_NUM_THREADS", "ccache", "not support input out tensor"):
        assert noise not in stderr
