"""The segmentation network's SGD: as the authors' code ran it (``original``), as the paper wrote it
(``paper``), or as the published Paddle port ran it (``single``).

The reference builds its SGD groups with ``optim_parameters()``, whose backbone group yields a
parameter once for every module that encloses it in a ``modules()`` walk: most backbone
parameters are listed 3 or 4 times. PyTorch 0.3/0.4 applied every entry. Per entry, for a
parameter p with gradient g:

    g += weight_decay * p       (in place: the next entry of p sees it)
    buf = momentum * buf + g    (one buffer per parameter; a fresh one starts at zero)
    p -= lr * buf

so a parameter listed m times takes m such updates per iteration. That is linear in (p, g, buf),
and m updates are one 3x3 matrix raised to the m-th power: each parameter is updated once, with
the m-fold effect in closed form, instead of looping over the entries. ``paper`` lists every
parameter once, which is plain SGD with momentum and L2 weight decay; ``single`` lists every
parameter once at the base rate, classifiers included: the port's one ``Momentum`` over
``model.parameters()``.
"""
import numpy as np
import paddle

SGD_GROUPS = ("original", "paper", "single")
VELOCITY_SUFFIX = "_velocity_0"  # the key Paddle's Momentum used, so earlier snapshots resume


def lr_poly(base_lr, iteration, num_steps, power, end_lr=0.0):
    """The poly schedule ``(base_lr - end_lr) * (1 - iteration / num_steps) ** power + end_lr``: the
    reference's with ``end_lr`` 0, Paddle's ``PolynomialDecay`` (the published port: its default
    end_lr 1e-4) otherwise."""
    return (base_lr - end_lr) * (1 - float(iteration) / num_steps) ** power + end_lr


def learning_rates(iteration, args):
    """{"lr/G": ..., "lr/D": ...}: the segmentation network's and the discriminators' rates at
    ``iteration`` of the poly schedule (both decay toward --end-learning-rate)."""
    return {"lr/G": lr_poly(args.learning_rate, iteration, args.num_steps, args.power, args.end_learning_rate),
            "lr/D": lr_poly(args.learning_rate_D, iteration, args.num_steps, args.power, args.end_learning_rate)}


def set_learning_rates(optimizers, iteration, args):
    """Give the first optimizer (the segmentation network's; its classifiers' 10x is part of their
    entries) and the others (the discriminators') their rates at ``iteration``; returns them."""
    rates = learning_rates(iteration, args)
    optimizers[0].set_lr(rates["lr/G"])
    for opt in optimizers[1:]:
        opt.set_lr(rates["lr/D"])
    return rates


def parameter_entries(model, sgd_groups):
    """[(parameter, learning-rate multiplier, multiplicity)] of the model's reference groups."""
    if sgd_groups not in SGD_GROUPS:
        raise ValueError("--sgd-groups {!r}: choose one of {}".format(sgd_groups, ", ".join(SGD_GROUPS)))
    entries, seen = [], {}
    for params, multiplier in model.optim_parameters():
        if sgd_groups == "single":
            multiplier = 1.0
        for p in params:
            key = id(p)
            if key in seen:
                index = seen[key]
                if entries[index][1] != multiplier:
                    raise ValueError("parameter {} is listed at two learning rates".format(p.name))
                if sgd_groups == "original":
                    entries[index][2] += 1
            else:
                seen[key] = len(entries)
                entries.append([p, multiplier, 1])
    return [tuple(entry) for entry in entries]


def update_coefficients(multiplicity, lr, momentum, weight_decay):
    """Coefficients of ``multiplicity`` reference updates: ``(step, velocity)`` such that

        p_new   = p - (step[0] * p + step[1] * g + step[2] * buf)
        buf_new = velocity[0] * p + velocity[1] * g + velocity[2] * buf

    (float64; ``step`` is kept apart from the identity so that small steps keep their precision
    in float32)."""
    # One entry maps (p, g, buf) to (p', g', buf'):
    #   g' = g + wd p;  buf' = mu buf + g';  p' = p - lr buf'
    one = np.array([[1.0 - lr * weight_decay, -lr, -lr * momentum],
                    [weight_decay, 1.0, 0.0],
                    [weight_decay, 1.0, momentum]])
    total = np.linalg.matrix_power(one, multiplicity)
    step = -(total[0] - np.array([1.0, 0.0, 0.0]))
    return step, total[2]


class ReferenceSGD(object):
    """SGD with momentum over the model's reference parameter groups (see the module docstring).

    ``entries``: from ``parameter_entries``; ``names``: {id(parameter): structured name}, used to
    key the state so that it loads into another process's parameters.
    """

    def __init__(self, entries, names, learning_rate, momentum, weight_decay):
        self.entries = entries
        self.names = names
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.lr = learning_rate
        self._velocity = {}  # id(parameter) -> tensor

    def set_lr(self, lr):
        self.lr = lr

    @property
    def parameters(self):
        return [p for p, _, _ in self.entries]

    @paddle.no_grad()
    def step(self):
        coefficients = {}
        for p, multiplier, multiplicity in self.entries:
            g = p.grad
            if g is None:  # as PyTorch: a parameter without a gradient is not touched, not even decayed
                continue
            if multiplicity == 1:  # plain SGD, in place: fewer kernels and temporaries than the general case
                decayed = paddle.add(g, p * self.weight_decay)
                buf = self._velocity.get(id(p))
                if buf is None:
                    self._velocity[id(p)] = buf = decayed
                else:
                    buf.scale_(self.momentum)
                    buf.add_(decayed)
                p.subtract_(buf * (self.lr * multiplier))
                continue
            key = (multiplier, multiplicity)
            if key not in coefficients:
                coefficients[key] = update_coefficients(multiplicity, self.lr * multiplier, self.momentum,
                                                        self.weight_decay)
            (sp, sg, sb), (vp, vg, vb) = coefficients[key]
            step = p * float(sp) + g * float(sg)
            velocity = p * float(vp) + g * float(vg)
            buf = self._velocity.get(id(p))
            if buf is not None:
                step = step + buf * float(sb)
                velocity = velocity + buf * float(vb)
            paddle.assign(p - step, output=p)
            self._velocity[id(p)] = velocity

    def clear_grad(self):
        for p in self.parameters:
            p.clear_gradient()

    def state_dict(self):
        """{structured parameter name + "_velocity_0": array}: the momentum buffers that exist."""
        return {self.names[id(p)] + VELOCITY_SUFFIX: self._velocity[id(p)].numpy()
                for p in self.parameters if id(p) in self._velocity}

    def set_state_dict(self, state, source="the snapshot"):
        by_name = {self.names[id(p)] + VELOCITY_SUFFIX: p for p in self.parameters}
        unknown = sorted(set(state) - set(by_name))
        if unknown:
            raise ValueError("{}: momentum for parameters the network does not train: {}".format(
                source, ", ".join(unknown[:5])))
        self._velocity = {}
        for key, value in state.items():
            p = by_name[key]
            if tuple(value.shape) != tuple(p.shape):
                raise ValueError("{}: momentum {} has shape {}, the parameter {}".format(
                    source, key, tuple(value.shape), tuple(p.shape)))
            self._velocity[id(p)] = paddle.to_tensor(np.asarray(value, dtype=np.float32))


@paddle.no_grad()
def clip_grad_norm(parameters, max_norm):
    """Scale the gradients so that their joint L2 norm is at most ``max_norm``, as PyTorch's
    clip_grad_norm_ (factor max_norm / (norm + 1e-6) when below 1); returns the norm before, a
    tensor: nothing is read back from the device (a factor of 1 leaves a gradient as it was)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return paddle.zeros([])
    norm = paddle.sqrt(paddle.add_n([paddle.sum(g.astype("float32") ** 2) for g in grads]))
    factor = paddle.clip(max_norm / (norm + 1e-6), max=1.0)
    for g in grads:
        paddle.assign(g * factor.astype(g.dtype), output=g)
    return norm


def build_sgd(model, args):
    """The segmentation network's optimizer for ``--sgd-groups``."""
    entries = parameter_entries(model, args.sgd_groups)
    names = {id(p): name for name, p in model.named_parameters()}
    return ReferenceSGD(entries, names, args.learning_rate, args.momentum, args.weight_decay)


def describe(optimizer, sgd_groups):
    """One log line: which semantics the run uses, and what that means per learning-rate group."""
    groups = {}
    for _, multiplier, multiplicity in optimizer.entries:
        counts = groups.setdefault(multiplier, {})
        counts[multiplicity] = counts.get(multiplicity, 0) + 1
    parts = []
    for multiplier, counts in sorted(groups.items()):
        entries = sum(m * n for m, n in counts.items())
        parts.append("{}x group: {} entries for {} parameters{}".format(
            "{:g}".format(multiplier), entries, sum(counts.values()),
            "" if entries == sum(counts.values()) else " ({})".format(
                ", ".join("{} listed {}x".format(n, m) for m, n in sorted(counts.items())))))
    meaning = {"original": "SGD as the authors' code ran it", "paper": "SGD with every parameter listed once",
               "single": "one SGD group, every parameter once at the base rate, as the published Paddle port"}
    return "--sgd-groups {}: {}; {}".format(sgd_groups, meaning[sgd_groups], "; ".join(parts))
