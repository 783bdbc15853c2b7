"""Process settings that must precede ``import paddle``. Importing any of the project's packages
applies them first (their ``__init__`` imports this module); entry points also import it first.

- Pillow before Paddle: Paddle 2.6 on Python 3.11 segfaults when zlib (Pillow's PNG codec) is
  first loaded after ``import paddle``.
- ``MKL_DEBUG_CPU_TYPE=5``: the MKL bundled with Paddle takes a slow code path on AMD CPUs; this
  makes it use its AVX2 kernels (measured: GEMM 80 -> 203 GFLOP/s, and no 5x slow-down after the
  first Adam step). Intel CPUs ignore it.
- ``OMP_NUM_THREADS``: Paddle sets it to 1 on import when it is unset, which leaves every CPU
  operation of the dynamic graph on one core (measured on 2 cores: matmul 96 -> 181 GFLOP/s).
  Paddle then prints a warning about it, which is dropped here since the setting is deliberate.
Set your own values to override either.
"""
import contextlib
import importlib.abc
import importlib.util
import io
import os
import sys
import warnings

os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")
os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
# Paddle warns at import about a compiler cache for C++ extensions, which this project never builds.
warnings.filterwarnings("ignore", message="No ccache found")

import PIL.Image  # noqa: E402,F401

_IMPORT_NOISE = ("WARNING: OMP_NUM_THREADS set to", "PLEASE USE OMP_NUM_THREADS WISELY")


class _QuietPaddleImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports paddle with its start-up warning about OMP_NUM_THREADS left out of stderr."""

    def find_spec(self, name, path=None, target=None):
        if name != "paddle":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            self._loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        captured = io.StringIO()
        try:
            with contextlib.redirect_stderr(captured):
                self._loader.exec_module(module)
        finally:
            sys.stderr.write("".join(line for line in captured.getvalue().splitlines(True)
                                     if not line.startswith(_IMPORT_NOISE)))


if "paddle" not in sys.modules:
    sys.meta_path.insert(0, _QuietPaddleImport())


def add_device_args(parser):
    parser.add_argument("--device", choices=("auto", "gpu", "cpu"), default="auto",
                        help="auto: the GPU when Paddle was built with CUDA, else the CPU")
    parser.add_argument("--gpu", type=int, default=0, help="which GPU to use (its id)")


def select_device(args, gpu_id=None):
    """``paddle.set_device`` from the --device/--gpu flags (``gpu_id`` overrides --gpu: the card
    paddle.distributed.launch gave this process); returns (use_gpu, gpu_id)."""
    import paddle
    gpu_id = args.gpu if gpu_id is None else gpu_id
    use_gpu = args.device == "gpu" or (args.device == "auto" and paddle.device.is_compiled_with_cuda())
    if use_gpu and not paddle.device.is_compiled_with_cuda():
        raise SystemExit("--device gpu: this Paddle has no CUDA support; install paddlepaddle-gpu "
                         "(see README) or use --device cpu")
    paddle.set_device("gpu:{}".format(gpu_id) if use_gpu else "cpu")
    return use_gpu, gpu_id
