"""Machinery shared by the DiLoCo optimizers: the global (outer) parameters and outer
momentum kept in fp32 outside the model, in a SharedState so a joining peer receives
them exactly; the outer Nesterov SGD step; the membership boundary; retrying an
all-reduce with the survivors."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..errors import AbortedError, InvalidArgumentError, PeerLostError
from ..state import SharedState

# How many times one outer all-reduce is retried after losing peers before giving up.
MAX_RETRIES = 16


class OuterState:
    """θ_global and the outer momentum for a list of parameters, split into fragments
    (one fragment unless streaming). Every tensor here is fp32 and contiguous."""

    def __init__(self, params: Sequence[torch.nn.Parameter], fragments: Sequence[Sequence[int]],
                 names: Sequence[str] | None = None) -> None:
        self.params = list(params)
        # Shared-state tensors are named after the model's parameters ("0.weight" and
        # "0.weight:momentum"), so a layout mismatch between peers names the parameter.
        names = list(names) if names is not None else [f"param.{i:05d}" for i in range(len(self.params))]
        self.fragments = [list(f) for f in fragments]
        self.globals = [p.detach().to(torch.float32).clone().contiguous() for p in self.params]
        self.momentum = [torch.zeros_like(g) for g in self.globals]
        tensors = {}
        for name, g, m in zip(names, self.globals, self.momentum):
            tensors[name] = g
            tensors[f"{name}:momentum"] = m
        self.shared = SharedState(tensors, revision=0)

    def pseudo_gradient(self, fragment: int) -> torch.Tensor:
        """Δ = θ_global − θ_local for one fragment, flattened into one fp32 tensor."""
        parts = [(self.globals[i] - self.params[i].detach().to(torch.float32)).reshape(-1)
                 for i in self.fragments[fragment]]
        return torch.cat(parts) if parts else torch.zeros(0)

    def apply(self, fragment: int, delta: torch.Tensor, lr: float, momentum: float, nesterov: bool) -> None:
        """Outer SGD step with the averaged Δ, as torch.optim.SGD(momentum, nesterov)
        would do it, but with one rounding per operation (no fused multiply-add), so that
        every peer computes the same bits from the same inputs."""
        offset = 0
        for i in self.fragments[fragment]:
            g_param, buf = self.globals[i], self.momentum[i]
            n = g_param.numel()
            grad = delta[offset : offset + n].view_as(g_param)
            offset += n
            buf.mul_(momentum)
            buf.add_(grad)
            update = grad + buf * momentum if nesterov else buf.clone()
            g_param.sub_(update * lr)

    def load_into_model(self, fragment: int | None = None) -> None:
        indices = range(len(self.params)) if fragment is None else self.fragments[fragment]
        with torch.no_grad():
            for i in indices:
                self.params[i].copy_(self.globals[i])


def check_args(model: Any, inner: Any, sync_every: int, outer_lr: float, outer_momentum: float) -> list:
    if not isinstance(model, torch.nn.Module):
        raise InvalidArgumentError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(inner, torch.optim.Optimizer):
        raise InvalidArgumentError(f"inner_optimizer must be a torch.optim.Optimizer, got {type(inner).__name__}")
    if isinstance(sync_every, bool) or not isinstance(sync_every, int) or sync_every < 1:
        raise InvalidArgumentError(f"sync_every must be a positive int, got {sync_every!r}")
    if not outer_lr > 0 or not 0 <= outer_momentum < 1:
        raise InvalidArgumentError("outer_lr must be > 0 and outer_momentum in [0, 1)")
    params = [p for _, p in trainable(model)]
    if not params:
        raise InvalidArgumentError("the model has no trainable parameters")
    if any(p.device.type != "cpu" for p in params):
        raise InvalidArgumentError("DiLoCo keeps θ_global on the CPU; move the model to the CPU (GPU models: TODO)")
    return params


def trainable(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, parameter) of every trainable parameter, in the model's order."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def all_reduce_mean(comm: Any, delta: torch.Tensor, quantization: str | None, tag: int = 0) -> Any:
    """Averages delta over the peers, retrying with the survivors when peers are lost
    (delta is intact after a failure). Returns the ReduceInfo of the attempt that worked."""
    for _ in range(MAX_RETRIES):
        try:
            return comm.all_reduce(delta, op="avg", quantization=quantization, tag=tag)
        except (PeerLostError, AbortedError):
            continue
    raise PeerLostError(f"the outer all-reduce failed {MAX_RETRIES} times in a row")


def finish_handle(comm: Any, handle: Any, delta: torch.Tensor, quantization: str | None, tag: int) -> Any:
    """Waits for an async outer all-reduce; if it failed, redoes it synchronously with
    the survivors. Returns the ReduceInfo."""
    try:
        return handle.wait()
    except (PeerLostError, AbortedError):
        return all_reduce_mean(comm, delta, quantization, tag)
