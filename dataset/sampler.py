"""Endless, reproducible data order that a resumed run can pick up at any batch.

Sample ``p`` of a stream is position ``p % N`` of epoch ``p // N``'s permutation, drawn from
``(seed, stream, epoch)``; its mirror decision comes from the same draw. A run resumed at
iteration ``i`` therefore sees exactly the images (and flips) an uninterrupted run would, with
any number of DataLoader workers, because nothing depends on state held by a worker.
"""
import numpy as np
import paddle

SOURCE_STREAM = 0
TARGET_STREAM = 1


class ResumableBatchSampler(paddle.io.Sampler):
    """Yields batches of ``(index, flip)`` for the datasets' ``__getitem__``, from ``start_batch`` on.

    ``batch_size`` is the global batch; with ``num_replicas`` processes, rank ``r`` gets the r-th
    equal share of every global batch, so the ranks together see what one process would.
    """

    def __init__(self, num_samples, batch_size, seed, stream, mirror=False, start_batch=0, num_batches=None,
                 rank=0, num_replicas=1):
        super().__init__()
        if num_samples < 1 or batch_size < 1:
            raise ValueError("need at least one sample and a batch size of at least 1")
        if batch_size % num_replicas:
            raise ValueError("a global batch of {} does not split over {} ranks".format(batch_size, num_replicas))
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.stream = stream
        self.mirror = mirror
        self.start_batch = start_batch
        self.num_batches = num_batches
        self.share = batch_size // num_replicas
        self.first_of_rank = rank * self.share
        self._epoch = None

    def _epoch_order(self, epoch):
        if self._epoch is None or self._epoch[0] != epoch:
            rng = np.random.default_rng([self.seed, self.stream, epoch])
            order = rng.permutation(self.num_samples)
            flips = rng.random(self.num_samples) < 0.5 if self.mirror else np.zeros(self.num_samples, bool)
            self._epoch = (epoch, order, flips)
        return self._epoch[1:]

    def sample(self, position):
        """(dataset index, flip) of the stream's ``position``-th sample."""
        epoch, offset = divmod(position, self.num_samples)
        order, flips = self._epoch_order(epoch)
        return int(order[offset]), bool(flips[offset])

    def batch(self, number):
        """This rank's share of global batch ``number``."""
        first = number * self.batch_size + self.first_of_rank
        return [self.sample(position) for position in range(first, first + self.share)]

    def __iter__(self):
        number = self.start_batch
        while self.num_batches is None or number < self.start_batch + self.num_batches:
            yield self.batch(number)
            number += 1

    def __len__(self):
        if self.num_batches is None:
            raise TypeError("an endless sampler has no length")
        return self.num_batches
