"""The machine the notebooks run on: Python, Paddle, the GPU and the free disk."""
import os
import platform
import shutil
import sys

GIB = 2.0 ** 30


def existing_parent(path):
    """``path``, or its nearest folder that exists: where the disk it will be on is measured."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def free_bytes(path):
    """Free bytes on the disk that holds (or will hold) ``path``."""
    return shutil.disk_usage(existing_parent(path)).free


def report(directories):
    """Python, Paddle, the GPU (or its absence), missing modules and the free disk, as text."""
    import paddle

    lines = ["Python {} ({})".format(platform.python_version(), sys.executable),
             "PaddlePaddle {}".format(paddle.__version__)]
    gpus = paddle.device.cuda.device_count() if paddle.device.is_compiled_with_cuda() else 0
    if gpus:
        for gpu in range(gpus):
            memory = paddle.device.cuda.get_device_properties(gpu).total_memory / GIB
            lines.append("GPU {}: {} ({:.0f} GB), CUDA {}".format(
                gpu, paddle.device.cuda.get_device_name(gpu), memory, paddle.version.cuda()))
    elif paddle.device.is_compiled_with_cuda():
        lines.append("GPU: none visible, though this Paddle was built with CUDA: start the project with a GPU "
                     "environment, or add --device cpu to the commands")
    else:
        lines.append("GPU: none (CPU-only Paddle): enough for DEMO mode; training needs a GPU environment "
                     "(AI Studio's GPU images come with paddlepaddle-gpu)")
    missing = []
    for module in ("numpy", "PIL", "tqdm", "visualdl", "matplotlib"):
        try:
            __import__(module)
        except ImportError:
            missing.append({"PIL": "pillow"}.get(module, module))
    if missing:
        # Not `pip install -r requirements.txt`: its CPU paddlepaddle would replace the GPU build.
        lines.append("missing modules: {0}; install them with: pip install {0}".format(" ".join(missing)))
    for directory in directories:
        usage = shutil.disk_usage(existing_parent(directory))
        note = "" if os.path.exists(directory) else " (does not exist yet; this is its disk)"
        lines.append("{}: {:.1f} GB free of {:.1f} GB{}".format(directory, usage.free / GIB, usage.total / GIB, note))
    return "\n".join(lines)
