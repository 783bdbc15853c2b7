"""Opt-in mixed precision (--amp fp16 or bf16; off by default, which is the faithful run).

The networks' forward passes run under Paddle's automatic mixed precision (O1: convolutions and
matrix products in half precision, the rest in float32); their outputs are cast back to float32,
so softmax and every loss are computed in float32. fp16 needs a loss scale against underflowing
gradients: the loss is multiplied by it before backward, the gradients divided by it before the
optimizers step, and a step whose gradients overflowed is skipped and the scale halved; after
``growth_interval`` good steps it doubles. That state is part of a snapshot, so a resumed run
scales as the uninterrupted one would. bf16 has float32's range and needs no scale.
"""
import paddle
from paddle import _C_ops

AMP_MODES = ("off", "fp16", "bf16")


class MixedPrecision(object):
    def __init__(self, mode="off", init_scale=2.0 ** 15, growth_interval=2000):
        if mode not in AMP_MODES:
            raise ValueError("--amp {!r}: choose one of {}".format(mode, ", ".join(AMP_MODES)))
        self.mode = mode
        self.scale = init_scale if mode == "fp16" else 1.0
        self.growth_interval = growth_interval
        self.good_steps = 0
        self.skipped = 0  # steps skipped for overflow, over the whole run

    @property
    def enabled(self):
        return self.mode != "off"

    def forward(self, net, *inputs, **kwargs):
        """``net(*inputs)``, in mixed precision when enabled; outputs in float32."""
        if not self.enabled:
            return net(*inputs, **kwargs)
        with paddle.amp.auto_cast(enable=True, level="O1", dtype="float16" if self.mode == "fp16" else "bfloat16"):
            out = net(*inputs, **kwargs)
        if isinstance(out, (tuple, list)):
            return type(out)(o.astype("float32") for o in out)
        return out.astype("float32")

    def backward(self, loss):
        (loss * self.scale if self.mode == "fp16" else loss).backward()

    def step(self, optimizers, parameters, before_step=None):
        """Unscale the gradients of ``parameters``, then run ``before_step`` (gradient clipping)
        and step every optimizer; with fp16, skip it all if a gradient overflowed. Returns
        whether the optimizers stepped."""
        if self.mode == "fp16":
            finite = unscale([p.grad for p in parameters if p.grad is not None], self.scale)
            if not finite:
                for opt in optimizers:
                    opt.clear_grad()
                self.scale /= 2.0
                self.good_steps = 0
                self.skipped += 1
                return False
            self.good_steps += 1
            if self.good_steps == self.growth_interval:
                self.scale *= 2.0
                self.good_steps = 0
        if before_step is not None:
            before_step()
        for opt in optimizers:
            opt.step()
            opt.clear_grad()
        return True

    def scalars(self):
        """What the log shows of it: the loss scale and the overflowed steps (fp16 only)."""
        if self.mode != "fp16":
            return {}
        return {"amp/loss_scale": self.scale, "amp/skipped_steps": float(self.skipped)}

    def state_dict(self):
        return {"mode": self.mode, "scale": self.scale, "good_steps": self.good_steps, "skipped": self.skipped}

    def set_state_dict(self, state, source="the snapshot"):
        if state.get("mode") != self.mode:
            raise ValueError("{}: written with --amp {}, not {}".format(source, state.get("mode"), self.mode))
        self.scale, self.good_steps, self.skipped = float(state["scale"]), int(state["good_steps"]), int(state["skipped"])


@paddle.no_grad()
def unscale(grads, scale):
    """Divide the gradients by the loss scale, in place; True when all of them are finite. One
    fused kernel (Paddle's own, the one its GradScaler uses) where Paddle has it; either way the
    device is waited for once, not once per parameter."""
    if not grads:
        return True
    fused = getattr(_C_ops, "check_finite_and_unscale_", None)
    if fused is not None:
        _, found_inf = fused(grads, paddle.full([1], scale, "float32"), paddle.full([1], False, "bool"))
        return not bool(found_inf)
    for g in grads:
        paddle.assign(g * (1.0 / scale), output=g)
    return bool(paddle.stack([paddle.isfinite(g).all() for g in grads]).all())


NO_AMP = MixedPrecision()  # float32 throughout: the default of every step function


def check_supported(mode, use_gpu):
    """A clear error at start-up for a mode this machine cannot run."""
    if mode == "off":
        return
    if not use_gpu:
        raise ValueError("--amp {}: Paddle's mixed precision runs on CUDA devices only (on a CPU it does nothing); "
                         "train with --amp off here".format(mode))
    supported = getattr(paddle.amp, "is_bfloat16_supported", lambda: True)  # Paddle 2.6 may lack these checks
    if mode == "bf16" and not supported():
        raise ValueError("--amp bf16: this GPU or Paddle build does not support bfloat16 (it needs compute capability "
                         "8.0, e.g. an A100); use --amp fp16")
    if mode == "fp16" and not getattr(paddle.amp, "is_float16_supported", lambda: True)():
        raise ValueError("--amp fp16: this GPU or Paddle build does not support float16")
