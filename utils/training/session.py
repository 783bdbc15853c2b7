"""Everything of a training run around its iteration: the engine's loop (``run_training``).

A method (utils/methods/, on utils/training/method.py's ``Method``) supplies the datasets, the
networks and one sub-batch's losses; the session checks and loads before iteration 1 (so that a
bad start fails at once), resumes or starts the run, and after every iteration logs, draws,
snapshots (validating with --val) and stops when asked to.
"""
import os
import shlex
import sys
import time
import traceback

import paddle
from tqdm import tqdm

from dataset.classes import ClassSetError
from dataset.loader import Batch, Batches, DataError, Watchdog, check_shared_memory
from dataset.sampler import SOURCE_STREAM, TARGET_STREAM, ResumableBatchSampler
from utils.evaluation.validation import Validation
from utils.files.checkpoint import Checkpointer, CheckpointError, SnapshotWriteError, ensure_room_for_snapshots
from utils.files.lock import DirectoryLock, DirectoryLocked
from utils.files.snapshots import SEGMENTATION, SnapshotDir, read_class_record, write_class_record
from utils.files.weights import WeightsError
from utils.environment import describe_environment, environment_record
from utils.health import HealthMonitor, gan_of
from utils.runtime import select_device
from utils.stopping import (STOPPED_ON_REQUEST, StoppedAtOnce, StopRequests, interrupted_status, run_interruptible,
                            signal_name)
from utils.training.amp import check_supported as check_amp_supported
from utils.training.distributed import Parallel
from utils.training.log import SilentLog, TrainLog, prediction_picture
from utils.training.method import MethodError, TrainingDiverged
from utils.training.options import SHARED_PARAMS, parse_settings
from utils.training.optimizer import learning_rates
from utils.training.params import describe_recipe
from utils.training.resume import adopt_settings, check_new_run, check_resumable, kept

TIME_LIMIT = "--stop-after-minutes"  # a stop reason that is not a request: the run ends with status 0
ANOTHER_RANKS_SIGNAL = "a stop signal to another rank"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def reason(exc):
    """One line of an exception: Paddle's errors put a C++ traceback before what went wrong."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    telling = [line for line in lines if "out of memory" in line.lower() or "Error" in line]
    return "{}: {}".format(type(exc).__name__, (telling or lines or [""])[-1][:300])


def continue_command():
    """This process's command line turned into the one that continues the run."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(os.path.join("utils", "methods", "__main__.py")):
        argv[0:1] = ["-m", "utils.methods"]
    if "--start-iter" in argv:
        index = argv.index("--start-iter")
        del argv[index:index + 2]
    if "--continue-train" not in argv:
        argv.append("--continue-train")
    return "python " + " ".join(shlex.quote(a) for a in argv)


class ValidationFailed(RuntimeError):
    """--val-on-error stop: a validation failed; its snapshot is complete."""


class TrainingSession(object):
    """The run in --snapshot-dir from its first check to its last snapshot."""

    def __init__(self, args, method_class, parallel=None, stop_requests=None):
        self.args, self.recipes = args, method_class.recipes
        self.params = SHARED_PARAMS + list(method_class.params)
        self.parallel = parallel or Parallel()
        self.stop_requests = stop_requests or StopRequests()
        self.parallel.wants_to_stop = self._wants_to_stop
        self.lock = DirectoryLock(args.snapshot_dir) if self.parallel.is_main else None
        self.log = SilentLog()
        self.watchdog = Watchdog(args.data_timeout, on_timeout=self._release_lock, log=self._log_text)
        # Set by start(): the method, its snapshots, validation (with --val), the first iteration.
        self.method = self.snapshots = self.checkpointer = self.validation = None
        self.start_iter = None
        self.loaders, self._source, self._target, self._bar = [], None, None, None
        self._window = {"since": time.time(), "iterations": 0, "data_wait": 0.0}  # since the last logged line
        self._deadline = None if args.stop_after_minutes is None else time.time() + 60 * args.stop_after_minutes
        if self.lock is not None:
            try:
                self.lock.acquire()
            except OSError as exc:
                raise CheckpointError("checkpoint directory {} is not writable: {}".format(args.snapshot_dir, exc))
        self._preread, self._adopted = {}, None
        try:
            if args.continue_train:
                self._preread, self._adopted = adopt_settings(args, self.params)
            self.parallel.per_rank_batch(args.batch_size)
            self.use_gpu, self.gpu_id = select_device(args, self.parallel.gpu_id)
            check_amp_supported(args.amp, self.use_gpu)
            if self.use_gpu and args.cudnn_exhaustive_search:
                paddle.set_flags({"FLAGS_cudnn_exhaustive_search": True})
        except BaseException:
            self.close()
            raise

    def _log_text(self, line):
        self.log.text(line)

    def _release_lock(self):
        if self.lock is not None:
            self.lock.release()

    # -- before iteration 1 --------------------------------------------------------------------

    def start(self, method):
        """Check and load everything; resume the run or start it. Returns the first iteration."""
        args, parallel = self.args, self.parallel
        self.method = method
        check_shared_memory(args.num_workers, parallel.per_rank_batch(args.batch_size), args.input_size,
                            args.input_size_target if method.target is not None else None,
                            held=args.iter_size, ignore_label=args.ignore_label)
        self.snapshots = snapshots = SnapshotDir(args.snapshot_dir, args.snapshot_prefix,
                                                 method.parts)
        self.checkpointer = Checkpointer(snapshots, method.nets, method.state, keep_last=args.keep_last,
                                         preread=self._preread)
        if args.check_data:
            from dataset.check import check_datasets
            check_datasets([d for d in (method.source, method.target) if d is not None])
        self.validation = Validation(args, self.use_gpu, self.gpu_id, self.watchdog) if args.val else None
        messages = [line for line in (describe_recipe(args, self.params, self.recipes), self._adopted) if line]
        messages += list(method.describe())
        self.environment = environment_record(args.random_seed, parallel.world_size, self.use_gpu, self.gpu_id)
        messages.append(describe_environment(self.environment))
        self.health = HealthMonitor(gan_of(args), args.num_steps_stop)
        resume = args.continue_train and (snapshots.complete() or args.start_iter != "latest")
        if resume:
            args.class_set.check_model_classes(read_class_record(args.snapshot_dir), args.snapshot_dir)
            start_iter, extra = self.checkpointer.resume(args.start_iter)
            parallel.require_same(start_iter, "the iteration to resume from")
            check_resumable(self.invariants(), extra["args"], self.params, extra.get("settings"))
            messages.append("resumed from {} at iteration {}".format(snapshots.name(start_iter), start_iter))
            given = [flag for flag in method.weight_flags if getattr(args, flag) is not None]
            if given:
                messages.append("{} not used: the run continues from its snapshot".format(
                    ", ".join("--" + flag.replace("_", "-") for flag in given)))
            parallel.barrier()  # every rank has read its snapshot before newer files move
            superseded = snapshots.set_aside_newer(start_iter) if parallel.is_main else None
            if superseded:
                messages.append("newer snapshots of the abandoned continuation moved to {}".format(superseded))
        else:
            start_iter = self._new_run(snapshots, messages)
        parallel.broadcast_networks(method.nets.values())
        if parallel.is_main:
            ensure_room_for_snapshots(args.snapshot_dir, self.checkpointer.snapshot_bytes())
            write_class_record(args.snapshot_dir, args.class_set)
            self.log = TrainLog(args.snapshot_dir, start_iter, hparams=args.record())
        if parallel.world_size > 1:
            messages.append("data parallel over {} processes: {} images per domain each".format(
                parallel.world_size, parallel.per_rank_batch(args.batch_size)))
        for line in messages:
            self.log.text(line)
            if parallel.is_main:
                print(line)
        self.start_iter = start_iter
        method.preflight(self.use_gpu, self.gpu_id, parallel.world_size)
        self._open_loaders(start_iter)
        return start_iter

    def _new_run(self, snapshots, messages):
        args = self.args
        # One class record per directory: a run of other classes beside it would overwrite it.
        args.class_set.check_model_classes(read_class_record(args.snapshot_dir), "the run in {} (another "
                                           "--snapshot-dir starts a new one)".format(args.snapshot_dir))
        start_iter = check_new_run(args, snapshots, self.method.parts)
        if args.continue_train:
            messages.append("no snapshot in {} yet: starting the run".format(args.snapshot_dir))
        self.method.load_initial_weights(messages.append)
        if start_iter:
            rates = learning_rates(start_iter, args)
            messages.append("starting at iteration {} of the schedule with fresh optimizers (momentum and Adam "
                            "moments are not in PyTorch snapshots); learning rates {:.3e} / {:.3e}".format(
                                start_iter, rates["lr/G"], rates["lr/D"]))
        return start_iter

    def invariants(self):
        return kept(self.args, self.params, self.method)

    def _open_loaders(self, start_iter):
        args, parallel = self.args, self.parallel

        def loader(dataset, stream, name):
            sampler = ResumableBatchSampler(len(dataset), args.batch_size, args.random_seed, stream, args.random_mirror,
                                            start_batch=start_iter * args.iter_size,
                                            num_batches=(args.num_steps_stop - start_iter) * args.iter_size,
                                            rank=parallel.rank, num_replicas=parallel.world_size)
            batches = Batches(dataset, sampler, args.num_workers, name, self.watchdog)
            self.loaders.append(batches)
            return (Batch(dataset.fields, batch) for batch in batches)

        self._source = loader(self.method.source, SOURCE_STREAM, "the source dataset ({})".format(args.data_dir))
        self._target = None if self.method.target is None else loader(
            self.method.target, TARGET_STREAM, "the target dataset ({})".format(args.data_dir_target))

    # -- the loop --------------------------------------------------------------------------------

    def iterations(self):
        self._bar = tqdm(range(self.start_iter, self.args.num_steps_stop), initial=self.start_iter,
                         total=self.args.num_steps_stop, desc="training", unit="it", dynamic_ncols=True,
                         disable=not self.parallel.is_main)
        self._window["since"] = time.time()
        return self._bar

    def next_batches(self):
        """--iter-size pairs of (source batch, target batch or None)."""
        started = time.time()
        batches = [(next(self._source), next(self._target) if self._target is not None else None)
                   for _ in range(self.args.iter_size)]
        self._window["data_wait"] += time.time() - started
        self._window["iterations"] += 1
        return batches

    def log_losses(self, iteration, losses, scalars):
        done = iteration + 1
        if done % self.args.log_every and done != self.args.num_steps_stop:
            return
        window = self._window
        logged = {"loss/" + name: value for name, value in losses.items()}
        logged.update(scalars)
        logged.update({"speed/iter_per_s": window["iterations"] / (time.time() - window["since"]),
                       "speed/data_wait_s": window["data_wait"] / window["iterations"]})
        self.log.scalars(done, logged)
        self.log.text("iter {} {} {}".format(done, " ".join("{}={:.4f}".format(n, v) for n, v in losses.items()),
                                             " ".join("{}={:.3e}".format(n, v) for n, v in scalars.items())))
        for warning in self.health.observe(self.log.records):
            self.log.text(warning)
            self._bar.write(warning)
        self._bar.set_postfix({name: "{:.3f}".format(value) for name, value in list(losses.items())[:2]})
        self._window = {"since": time.time(), "iterations": 0, "data_wait": 0.0}

    def picture(self, iteration, batches):
        done = iteration + 1
        if self.args.picture_every and done % self.args.picture_every == 0 and self.parallel.is_main:
            source_batch, target_batch = batches[0]
            images = (target_batch if target_batch is not None else source_batch).images
            self.log.picture(done, prediction_picture(self.method.nets[SEGMENTATION], images,
                                                       self.args.class_set))

    def _wants_to_stop(self):
        """(on a signal, at --stop-after-minutes' deadline)"""
        return self.stop_requests.requested, self._deadline is not None and time.time() > self._deadline

    def stop_reason(self):
        """Why the run stops after this iteration (a stop signal, TIME_LIMIT), or None. With
        several ranks, one that wants to stop stops them all at the same iteration, for the same
        reason (Parallel.agree_to_stop)."""
        signalled, timed_out = self.parallel.agree_to_stop(self._wants_to_stop())
        if signalled:
            return self._signal_reason()
        return TIME_LIMIT if timed_out else None

    def _signal_reason(self):
        return signal_name(self.stop_requests.signum) if self.stop_requests.requested else ANOTHER_RANKS_SIGNAL

    def snapshot(self, iteration, stopping=None):
        """Write a snapshot after ``iteration`` when one is due: every --save-pred-every, at the
        end, and when the run is ``stopping`` early (the reason). Returns whether it wrote one."""
        done = iteration + 1
        due = bool(done % self.args.save_pred_every == 0 or done == self.args.num_steps_stop or stopping)
        if due:  # rank 0 writes; the others wait outside any collective (validation can take long)
            self.parallel.run_on_main(lambda: self._write_snapshot(done, stopping))
        return due

    def say_stopped(self, iteration, stopping):
        """The line of a run that stops early after ``iteration``, whose snapshot is written."""
        done = iteration + 1
        if stopping == ANOTHER_RANKS_SIGNAL:  # this rank's own may have come since (a launcher signals each)
            stopping = self._signal_reason()
        reason = stopping if stopping != TIME_LIMIT else "{} {}".format(TIME_LIMIT, self.args.stop_after_minutes)
        message = "stopped on {} at iteration {}: snapshot {} is complete. Continue with: {}".format(
            reason, done, self.snapshots.name(done), continue_command())
        self.log.text(message)
        if self.parallel.is_main:
            self._bar.write(message)

    def _write_snapshot(self, done, stopping):
        model_path = self.snapshots.files(done)[SEGMENTATION]

        failure = []

        def validate():
            # Before the state file, so that a run killed while validating validates again; a
            # validation that fails must not cost the snapshot.
            try:
                message = self.validation(self.method.nets[SEGMENTATION], model_path, done, self.log,
                                          self.snapshots.best_path)
            except Exception as exc:  # noqa: BLE001 (out of memory, a bad val image, ...)
                failure.append("validation of {} failed: {}".format(self.snapshots.name(done), reason(exc)))
                message = failure[0] + "; the snapshot is written all the same"
                self.log.text(message + "\n" + traceback.format_exc())
            self._bar.write(message)

        validating = self.validation is not None and not (stopping and self.args.fast_stop)
        try:
            files = self.checkpointer.save(done, before_state=validate if validating else None,
                                           args=self.invariants(), settings=self.args.record(),
                                           environment=self.environment)
        except SnapshotWriteError as exc:
            raise SnapshotWriteError("{}. Free some space (or fix the permissions), then continue with: {}".format(
                exc, continue_command()))
        self.log.text("snapshot {}".format(files[SEGMENTATION]))
        if failure and self.args.val_on_error == "stop":
            raise ValidationFailed("{}; snapshot {} is complete (--val-on-error stop). Continue with: {}".format(
                failure[0], self.snapshots.name(done), continue_command()))

    def stopped_at_once(self, exc):
        """The line for a run that a second signal ended during its stop."""
        latest = self.snapshots.latest() if self.snapshots is not None else None
        kept = "no snapshot was written yet" if latest is None else \
            "the newest complete snapshot is {}".format(self.snapshots.name(latest))
        message = "stopped at once on a second {}: {}. Continue with: {}".format(exc, kept, continue_command())
        self.log.text(message)
        return message

    def close(self):
        self.watchdog.close()
        for loader in self.loaders:
            loader.close()
        if self._bar is not None:
            self._bar.close()
        self.log.close()
        self._release_lock()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is not None and not isinstance(exc, KeyboardInterrupt):
            self.log.text("".join(traceback.format_exception(exc_type, exc, tb)).rstrip())
        self.close()


def train(method_class, argv=None, prog=None):
    """Train a ``method_class`` run from its command line ``argv`` (default: sys.argv)."""
    return run_training(parse_settings(method_class, argv, prog), method_class)


def run_training(args, method_class):
    """Train ``method_class`` (a utils/training/method.py ``Method``; or the variant its settings
    select) with the settings ``args`` (options.parse_settings) from its start or its last snapshot.
    Returns the exit status: 0 when the run finished or reached --stop-after-minutes,
    STOPPED_ON_REQUEST when a signal stopped it (README: Stopping)."""
    stopping = None
    method_class = method_class.variant(args)
    with StopRequests() as stop_requests, TrainingSession(args, method_class, stop_requests=stop_requests) as session:
        args.freeze()  # resolved: parsed, the recipe filled in, a continued run's adopted from its snapshot
        method = method_class(args)
        session.start(method)
        try:
            stop_requests.armed = True  # from here a signal stops the run with a snapshot
            # After each iteration, in this order: the losses are logged before anything can fail on
            # them; the picture is drawn before the snapshot, whose validation moves nothing it shows;
            # the stop is decided before the snapshot, so that a stopping run writes one (and every
            # rank agrees on it in the losses' all-reduce); the stop's line comes last, naming the
            # snapshot just written.
            for iteration in session.iterations():
                batches = session.next_batches()
                losses, scalars = method.run_step(batches, iteration, session.parallel)
                session.log_losses(iteration, losses, scalars)
                session.picture(iteration, batches)
                stopping = session.stop_reason()
                if session.snapshot(iteration, stopping) and not stopping:
                    # A signal during a periodic snapshot (its validation can take long): that
                    # snapshot is the stop's.
                    stopping = session.stop_reason()
                if stopping and iteration + 1 < args.num_steps_stop:
                    session.say_stopped(iteration, stopping)
                    break
                stopping = None  # at the last iteration the run has finished all the same
        except StoppedAtOnce as exc:
            message = session.stopped_at_once(exc)
            if session.parallel.is_main:
                sys.stderr.write("\n" + message + "\n")
            return interrupted_status(exc.signum)
        finally:
            stop_requests.armed = False
    if stopping is None and session.parallel.is_main:
        print("finished: {} iterations; snapshots in {}".format(args.num_steps_stop, os.path.abspath(args.snapshot_dir)))
    return STOPPED_ON_REQUEST if stopping not in (None, TIME_LIMIT) else 0


# What the user can act on from its message alone: it ends a run with one line.
PROJECT_ERRORS = (CheckpointError, WeightsError, TrainingDiverged, DataError, DirectoryLocked, ValidationFailed,
                  MethodError, ClassSetError)


def raised_by_this_project(exc):
    """Whether our own code raised ``exc`` on purpose (a ValueError or OSError naming a flag or a
    file), rather than a library under it (a bug's, say)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    path = os.path.abspath(tb.tb_frame.f_code.co_filename) if tb is not None else ""
    return path.startswith(ROOT + os.sep) and "site-packages" not in path


def command_line(main):
    """Run a training script's ``main``: an error of the project's, which says what to do, ends it
    with one line (its traceback is in train.log); any other keeps its traceback. An interrupt
    before iteration 1 ends it with one line too (once training runs, a signal stops it with a
    snapshot: run_training)."""
    def guarded():
        try:
            return main()
        except Exception as exc:  # noqa: BLE001 (sorted below; the rest is raised again)
            if isinstance(exc, PROJECT_ERRORS) or (isinstance(exc, (ValueError, OSError)) and
                                                   raised_by_this_project(exc)):
                return "error: {}".format(exc)
            raise
    return run_interruptible(guarded, lambda: "training had not started, so no snapshot was written; run the "
                                              "command again")
