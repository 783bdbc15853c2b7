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


def _stop(process):
    """After an interrupt: let the script run its ``finally`` blocks, then insist."""
    # Jupyter's interrupt reaches the whole process group, so the script usually has it already.
    for how, wait in ((None, 10), (signal.SIGINT, 30), (signal.SIGKILL, 30)):
        if how is not None:
            process.send_signal(how)
        try:
            process.communicate(timeout=wait)  # reads (and drops) its output, so it cannot block on it
            return
        except subprocess.TimeoutExpired:
            continue


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
        _stop(process)
        raise
    finally:
        process.stdout.close()
    if returncode != 0:
        raise CommandFailed(shown, returncode, _last_lines(tail))
