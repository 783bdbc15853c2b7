"""The project's command lines, run from a notebook cell as a user would type them."""
import codecs
import os
import re
import shlex
import signal
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class CommandFailed(RuntimeError):
    """A command exited with an error; its output was shown above the traceback."""

    def __init__(self, command, returncode, tail):
        self.command, self.returncode, self.tail = command, returncode, tail
        super().__init__("{} failed with exit code {}; its last lines (all of its output is above):\n{}".format(
            command, returncode, tail))


def _last_lines(text, count=6):
    lines = [line for line in re.split(r"[\r\n]+", text) if line.strip()]
    return "\n".join(lines[-count:])


# Seconds a stopped command gets to finish: a training run finishes its iteration and writes a
# snapshot (a few seconds on a GPU at the documented size; README: Stopping), more with --val.
STOP_GRACE = 300


def _stop(process, show, grace=STOP_GRACE):
    """After an interrupt of the kernel: SIGINT (Jupyter's own reached the command too, moments
    before: a training run takes the two as one), which a training run answers with a snapshot,
    printing which one and how to continue; SIGKILL if it has not ended after ``grace`` s. A second
    interrupt of the kernel meanwhile sends a second SIGINT: the run stops at once, keeping its
    previous snapshot. What the command prints is passed to ``show``."""
    try:
        process.send_signal(signal.SIGINT)
        try:
            out, _ = process.communicate(timeout=grace)
        except KeyboardInterrupt:
            process.send_signal(signal.SIGINT)
            out, _ = process.communicate(timeout=30)
        show(out)
    except subprocess.TimeoutExpired:
        print("\nthe command did not stop within {} s and was killed; a training run continues from its last "
              "complete snapshot".format(grace), flush=True)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def run(arguments, cwd=None):
    """Run ``python ARGUMENTS...`` with this kernel's interpreter in the repo root.

    The output appears in the notebook as it comes (progress bars included); a non-zero exit
    raises CommandFailed, an interrupt of the kernel stops the command too.
    """
    arguments = [str(argument) for argument in arguments]
    shown = "python " + " ".join(shlex.quote(argument) for argument in arguments)
    print("$ " + shown, flush=True)
    process = subprocess.Popen([sys.executable] + arguments, cwd=cwd or REPO_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    tail = ""

    def show(data):
        sys.stdout.write(decoder.decode(data or b"", final=True))
        sys.stdout.flush()

    try:
        while True:
            chunk = process.stdout.read1(1 << 16)
            if not chunk:
                break
            text = decoder.decode(chunk)
            sys.stdout.write(text)
            sys.stdout.flush()
            tail = (tail + text)[-8192:]
        returncode = process.wait()
    except BaseException:
        _stop(process, show)
        raise
    finally:
        process.stdout.close()
    if returncode != 0:
        raise CommandFailed(shown, returncode, _last_lines(tail))
