"""Data-parallel training on paddle.distributed: one process per GPU (gloo processes on a CPU).

    python -m paddle.distributed.launch --gpus 0,1 train_gta2cityscapes_multi.py ...

Every rank runs the whole iteration on its share of the global batch; before the optimizers
step, the gradients of all three networks are averaged across ranks. That is done explicitly
(Paddle's fused, bucketed all-reduce) rather than by ``paddle.DataParallel`` hooks, because one
iteration has several backward passes per network, the discriminators are frozen during one of
them and two classifier branches never get a gradient: the hooks would fire per pass or wait
for gradients that never come.
"""
import os
import signal
import threading
import time

import paddle
import paddle.distributed as dist

from utils.stopping import STOP_SIGNALS


class Parallel(object):
    """This process's place in the job; a single process is rank 0 of 1."""

    def __init__(self):
        self.world_size = int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))
        self.rank = 0
        self._main_work_done = 0  # calls of run_on_main so far
        # Set by the session: whether this rank wants the run to stop, (on a signal, at its time
        # limit). average_values carries it to every rank with the losses, at no extra collective.
        self.wants_to_stop = lambda: (False, False)
        self._stop_exchanged = None
        if self.world_size > 1:
            dist.init_parallel_env()
            self.rank = dist.get_rank()
            self.world_size = dist.get_world_size()

    @property
    def is_main(self):
        """Only the main rank writes snapshots and logs."""
        return self.rank == 0

    @property
    def gpu_id(self):
        """The card paddle.distributed.launch gave this process (``--gpus``, passed on as
        ``FLAGS_selected_gpus``, counted among the visible cards), also when it started a single
        process; None outside the launcher or without CUDA."""
        selected = os.environ.get("FLAGS_selected_gpus", "").split(",")[0].strip()
        if "PADDLE_TRAINERS_NUM" not in os.environ or not selected or not paddle.device.is_compiled_with_cuda():
            return None
        return int(selected)

    def per_rank_batch(self, batch_size):
        if batch_size % self.world_size:
            raise ValueError("--batch-size {} does not split evenly over {} processes: use a multiple of {}".format(
                batch_size, self.world_size, self.world_size))
        return batch_size // self.world_size

    def broadcast_networks(self, nets):
        """Give every rank rank 0's parameters and BN statistics, after loading or resuming: the
        ranks then start from the same networks whatever each one loaded or initialised. Done as
        ``paddle.DataParallel`` does when it is built (``sync_params_buffers``): one broadcast per
        buffer of up to 128 MB of fused tensors, not one per tensor."""
        if self.world_size == 1:
            return
        from paddle.distributed.parallel import sync_params_buffers
        with paddle.no_grad():
            for net in nets:
                sync_params_buffers(net, src_rank=0)

    def average_gradients(self, nets):
        """The gradients, and the running statistics of BN layers in batch-statistics mode (--bn
        train: each rank normalises with its own share of the batch and moves its own running
        statistics), averaged over the ranks, so that every rank holds the same networks."""
        if self.world_size == 1:
            return
        from paddle.distributed.fleet.utils.hybrid_parallel_util import fused_allreduce_gradients
        fused_allreduce_gradients([p for net in nets for p in net.parameters()], None)
        statistics = [buffer for net in nets for layer in net.sublayers() if getattr(layer, "statistics", None) == "train"
                      for buffer in (layer._mean, layer._variance)]
        if statistics:
            with paddle.no_grad():
                total = paddle.concat([buffer.flatten() for buffer in statistics])
                dist.all_reduce(total)
                for buffer, mean in zip(statistics, paddle.split(total / self.world_size,
                                                                 [int(b.shape[0]) for b in statistics])):
                    paddle.assign(mean, output=buffer)

    def average_values(self, values):
        """{name: float} averaged over ranks (the logged losses of the global batch)."""
        if self.world_size == 1:
            return values
        names = sorted(values)
        total = paddle.to_tensor([values[n] for n in names] + [float(w) for w in self.wants_to_stop()],
                                 dtype="float64")
        dist.all_reduce(total)
        total = total.numpy()
        self._stop_exchanged = tuple(bool(flag > 0) for flag in total[len(names):])
        return {n: float(v) / self.world_size for n, v in zip(names, total)}

    def barrier(self):
        if self.world_size > 1:
            dist.barrier()

    def require_same(self, value, what):
        """Raise unless every rank holds the same integer ``value``."""
        if self.world_size == 1:
            return
        extremes = paddle.to_tensor([value, -value], dtype="int64")
        dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
        highest, lowest = int(extremes.numpy()[0]), -int(extremes.numpy()[1])
        if highest != lowest:
            raise RuntimeError("the ranks disagree on {}: from {} to {} (rank {} has {}). All machines must see the "
                               "same --snapshot-dir (a shared folder).".format(what, lowest, highest, self.rank, value))

    def agree_to_stop(self, wanted):
        """``wanted`` = (on a signal, at the time limit) of this rank; returns, the same on every
        rank, whether any rank wanted each: as of this iteration's average_values when it ran (a
        signal that came later counts at the next iteration), else by a collective of its own."""
        if self.world_size == 1:
            return tuple(bool(w) for w in wanted)
        exchanged, self._stop_exchanged = self._stop_exchanged, None
        if exchanged is not None:
            return exchanged
        flags = paddle.to_tensor([1 if w else 0 for w in wanted], dtype="int32")
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return tuple(bool(flag) for flag in flags.numpy())

    def run_on_main(self, work, poll_seconds=1.0):
        """``work()`` on rank 0 alone (validating and writing a snapshot), the other ranks waiting
        for it to return, however long that takes; returns what ``work`` returned on rank 0 and
        None elsewhere. The other ranks must not wait in the next collective instead: gloo gives
        up after 30 seconds and NCCL after ``PADDLE_PG_TIMEOUT`` (30 minutes by default). So they
        poll a counter in the job's TCP store (the one ``init_parallel_env`` set up), which no
        collective timeout covers. Should rank 0 fail, they wait until the launcher ends the job
        with rank 0's error."""
        if self.world_size == 1:
            return work()
        from paddle.base import core
        store = core.create_or_get_global_tcp_store()
        self._main_work_done += 1
        key = "adaptseg/main_work_done"
        result = None
        if self.is_main:
            try:
                result = work()
            except BaseException:
                _store_request(lambda: store.add(key + "_failed", 1))  # the others stop too, not wait for the launcher
                raise
            finally:
                _store_request(lambda: store.add(key, 1))
        else:
            while _store_request(lambda: store.add(key, 0)) < self._main_work_done:
                time.sleep(poll_seconds)
            if _store_request(lambda: store.add(key + "_failed", 0)):
                raise RuntimeError("rank 0 failed while writing a snapshot; its message is in its log (workerlog.0)")
        # Everyone has seen the counter before rank 0 goes on: after the last snapshot it ends, and
        # its store with it, while another rank may be asleep between two looks.
        dist.barrier()
        return result


def _store_request(call):
    """``call()``, a request to the job's TCP store, made in a thread that the stop signals never
    reach. A stop signal (Ctrl-C, SIGTERM) reaches every rank while the others poll the store
    through rank 0's snapshot; had it interrupted a request, Paddle's store would give up on the
    read ("TCP receive error ... Interrupted system call") and leave its reply on the connection,
    for the next request to take as its own (a rank then read "rank 0 failed" from the counter's
    reply). The main thread gets the signal instead, as it would have anyway."""
    if not hasattr(signal, "pthread_sigmask"):
        return call()
    outcome = []

    def request():
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            outcome.append((True, call()))
        except BaseException as error:  # noqa: BLE001  (raised again in the caller's thread)
            outcome.append((False, error))

    thread = threading.Thread(target=request, name="store-request", daemon=True)
    thread.start()
    thread.join()
    succeeded, value = outcome[0]
    if not succeeded:
        raise value
    return value
