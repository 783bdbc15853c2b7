"""Stopping on request: SIGINT (Ctrl-C, a notebook's interrupt), SIGTERM (kill, docker stop, a
scheduler's pre-emption, a notebook server ending a kernel) and SIGUSR1 (what SLURM's --signal
sends ahead of a job's time limit).

Paddle installs a C++ handler for SIGTERM that prints a stack and aborts; a Python handler
replaces it (signal.signal is a sigaction; checked with Paddle 2.6 and 3.3), so the scripts set
their own and Paddle's never runs. ``paddle.disable_signal_handler()`` would also remove Paddle's
handlers for crashes (SIGSEGV, SIGBUS), whose stacks are worth keeping.
"""
import os
import signal
import sys
import threading
import time

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1") if hasattr(signal, name))
# A training run that stopped on request with a complete snapshot exits with this status:
# sysexits.h's EX_TEMPFAIL ("temporary failure, try again later"). Not 0, so that a notebook or
# a job script does not go on as if training had finished.
STOPPED_ON_REQUEST = 75
# Any other script, and a training run stopped at once by a second signal: the shell's
# 128 + signal number, as if the signal had ended the process (130 for Ctrl-C).


def interrupted_status(signum=signal.SIGINT):
    return 128 + int(signum)


def signal_name(signum):
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "signal {}".format(signum)


class Interrupted(KeyboardInterrupt):
    """A stop signal where nothing is worth finishing first (any script but a training loop)."""

    def __init__(self, signum):
        super().__init__(signal_name(signum))
        self.signum = signum


class StoppedAtOnce(Interrupted):
    """A second stop signal arrived while the run was stopping: it ends without a new snapshot."""


def ignore_stop_signals():
    """In a helper process (a loader worker, a decoding process): leave stop signals to the main
    process, which Ctrl-C and a scheduler's SIGTERM reach too; the helper ends when it is told to,
    or with its parent."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def _install(handler):
    """Set ``handler`` for the stop signals; returns the handlers it replaced. Only the main thread
    may set handlers (a notebook's kernel runs scripts' functions there too)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}


def _restore(previous):
    for signum, handler in previous.items():
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


class StopRequests(object):
    """While open and ``armed`` (the training loop runs), the first stop signal only takes note
    (``requested``, ``signum``) and says so on stderr; the loop finishes its iteration and writes
    a snapshot. A second one, more than ``repeat_window`` seconds later, raises StoppedAtOnce
    wherever the process is, which leaves the newest complete snapshot as it was. Before the loop
    (loading, downloading) a signal interrupts at once (Interrupted): nothing was trained to keep;
    after it (``armed`` False again, the last snapshot written) signals are ignored.

    Signals within the window repeat the first: paddle.distributed.launch, signalled, sends each
    rank SIGTERM up to three times 0.2 s apart (ProcessContext.terminate, 2.6 and 3.3), then waits
    30 s for the ranks before it kills them."""

    repeat_window = 2.0

    def __init__(self, what_follows="finishing this iteration, then writing a snapshot"):
        self.signum = None
        self.what_follows = what_follows
        self.armed = None  # None: not yet; True: the loop runs; False: it has ended
        self._previous = {}
        self._noted_at = None

    @property
    def requested(self):
        return self.signum is not None

    def _handle(self, signum, _frame):
        if self.armed is None:
            raise Interrupted(signum)
        if not self.armed:
            return
        if self.signum is not None:
            if time.monotonic() - self._noted_at < self.repeat_window:
                return
            raise StoppedAtOnce(signum)
        self.signum, self._noted_at = signum, time.monotonic()
        # os.write: a handler that ran during a blocked sys.stderr write would raise "reentrant call"
        os.write(2, "\n{} received: {} (send it again to stop at once, without it)\n".format(
            signal_name(signum), self.what_follows).encode())

    def __enter__(self):
        self._previous = _install(self._handle)
        return self

    def __exit__(self, *exc):
        _restore(self._previous)
        self._previous = {}


def _interrupt(signum, _frame):
    raise Interrupted(signum)


def run_interruptible(main, interrupted_line):
    """Run ``main()`` of a script that is not a training run; SIGTERM and SIGUSR1 interrupt it as
    Ctrl-C does, and any interrupt ends it with ``interrupted_line()`` (what is complete and how to
    go on) and status 128 + the signal's number instead of a traceback."""
    previous = _install(_interrupt)
    try:
        return main()
    except KeyboardInterrupt as exc:
        sys.stderr.write("\ninterrupted: {}\n".format(interrupted_line()))
        sys.stderr.flush()
        return interrupted_status(getattr(exc, "signum", signal.SIGINT))
    finally:
        _restore(previous)
