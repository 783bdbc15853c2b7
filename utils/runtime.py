"""Process settings that must precede ``import paddle``; entry points import this module first.

- Pillow before Paddle: Paddle 2.6 on Python 3.11 segfaults when zlib (Pillow's PNG codec) is
  first loaded after ``import paddle``.
- ``MKL_DEBUG_CPU_TYPE=5``: the MKL bundled with Paddle takes a slow code path on AMD CPUs; this
  makes it use its AVX2 kernels (measured: GEMM 80 -> 203 GFLOP/s, and no 5x slow-down after the
  first Adam step). Intel CPUs ignore it. Set your own value to override.
"""
import os

os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")

import PIL.Image  # noqa: E402,F401


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
