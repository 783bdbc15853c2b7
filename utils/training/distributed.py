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

import paddle
import paddle.distributed as dist


class Parallel(object):
    """This process's place in the job; a single process is rank 0 of 1."""

    def __init__(self):
        self.world_size = int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))
        self.rank = 0
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
        """The card the launcher gave this rank (``--gpus``); None outside a GPU job."""
        if self.world_size == 1 or not paddle.device.is_compiled_with_cuda():
            return None
        return dist.ParallelEnv().device_id

    def per_rank_batch(self, batch_size):
        if batch_size % self.world_size:
            raise ValueError("--batch-size {} does not split evenly over {} processes: use a multiple of {}".format(
                batch_size, self.world_size, self.world_size))
        return batch_size // self.world_size

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
        total = paddle.to_tensor([values[n] for n in names], dtype="float64")
        dist.all_reduce(total)
        return {n: float(v) / self.world_size for n, v in zip(names, total.numpy())}

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

    def agree(self, decision):
        """Rank 0's ``decision`` (a bool), the same on every rank."""
        if self.world_size == 1:
            return decision
        flag = paddle.to_tensor([1 if decision else 0], dtype="int32")
        dist.broadcast(flag, src=0)
        return bool(flag.numpy()[0])
