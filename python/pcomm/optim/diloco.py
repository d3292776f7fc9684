"""DiLoCo: local training with any torch optimizer, and every H steps an outer step on
the averaged pseudo-gradient Δ = θ_global − θ_local (outer Nesterov SGD).

    opt = pcomm.optim.DiLoCo(model, torch.optim.AdamW(model.parameters()), comm, sync_every=50)
    for x, y in data:
        opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()

Outer steps are collectives: every peer's step() reaches them together. At each outer
boundary the peers also run update_topology() (admitting newcomers) and
sync_shared_state() (a newcomer receives θ_global and the outer momentum exactly).
Construct it on every peer right after connect(): construction is such a boundary too.
With ``progress=ProgressBoard(store)`` each outer boundary also publishes this peer's
step and throughput into the run's CRDT store (``pcomm progress`` shows them).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..errors import AbortedError, InvalidArgumentError
from ._outer import MAX_RETRIES, OuterState, all_reduce_mean, check_args, trainable

log = logging.getLogger("pcomm.optim")
kCheckpointFormat = "pcomm.diloco/1"


class DiLoCo(torch.optim.Optimizer):
    """Synchronous DiLoCo. See the module docstring.

    It is a ``torch.optim.Optimizer`` whose ``param_groups`` and ``state`` are the inner
    optimizer's own objects: LR schedulers (``StepLR(opt, ...)``, ``OneCycleLR``, warmup),
    gradient clipping over ``opt.param_groups`` and ``torch.amp.GradScaler(...).step(opt)``
    act on the inner optimizer, and ``step(closure)`` passes the closure on."""

    def __init__(
        self,
        model: torch.nn.Module,
        inner_optimizer: torch.optim.Optimizer,
        comm: Any,
        *,
        sync_every: int,
        outer_lr: float = 0.7,
        outer_momentum: float = 0.9,
        nesterov: bool = True,
        quantization: str | None = None,
        progress: Any = None,
        checkpoint: dict | None = None,
    ) -> None:
        params = check_args(model, inner_optimizer, sync_every, outer_lr, outer_momentum)
        # Optimizer's bookkeeping (hooks, step patching), then the inner optimizer's groups
        # and state in place of our own: one set of hyperparameters, seen from both.
        super().__init__(params, {})
        self.param_groups = inner_optimizer.param_groups
        self.state = inner_optimizer.state
        self.defaults = inner_optimizer.defaults
        self.model, self.inner, self.comm = model, inner_optimizer, comm
        self.sync_every, self.outer_lr, self.outer_momentum = sync_every, outer_lr, outer_momentum
        self.nesterov, self.quantization = nesterov, quantization
        self.progress = progress  # a pcomm.crdt.ProgressBoard: reports at each outer step
        self.outer = OuterState(params, self._fragments(params), [n for n, _ in trainable(model)])
        self.local_step = 0
        self.bytes_sent = 0  # wire bytes of the outer all-reduces on this peer
        self.last_world_size = comm.world_size
        # Construction is a boundary without update_topology: connect() (or the others'
        # update_topology) just returned, so everyone continues with the state sync. A
        # peer resuming from a checkpoint offers it there as authoritative: it wins over
        # freshly initialised peers (two different checkpoints are refused, naming both).
        if checkpoint is not None:
            self._load(checkpoint)
        self._sync_state("send_only" if checkpoint is not None else "enforce_popular")
        comm.set_step(self.outer_step)

    def _fragments(self, params: list) -> list[list[int]]:
        return [list(range(len(params)))]

    @property
    def outer_step(self) -> int:
        """Outer steps applied so far (the shared state's revision)."""
        return self.outer.shared.revision

    @property
    def shared_state(self):
        """The SharedState holding θ_global and the outer momentum (``state`` is the
        torch Optimizer's: the inner optimizer's per-parameter state)."""
        return self.outer.shared

    def state_dict(self) -> dict:  # type: ignore[override]
        """A checkpoint: the inner optimizer's state, θ_global, the outer momentum and the
        outer step (``torch.save`` it). It describes the last outer step: inner steps
        since then are not in it. Resume with ``DiLoCo(..., checkpoint=sd)``."""
        return {
            "format": kCheckpointFormat,
            "inner": self.inner.state_dict(),
            "shared": {name: t.detach().clone() for name, t in self.outer.shared.tensors.items()},
            "revision": self.outer.shared.revision,
        }

    def load_state_dict(self, state_dict: dict) -> None:  # type: ignore[override]
        raise InvalidArgumentError(
            "a DiLoCo checkpoint is offered to the other peers at the construction sync: pass it to the "
            "constructor, DiLoCo(model, inner, comm, ..., checkpoint=state_dict), instead of load_state_dict()")

    def _load(self, checkpoint: dict) -> None:
        if not isinstance(checkpoint, dict) or checkpoint.get("format") != kCheckpointFormat:
            raise InvalidArgumentError("checkpoint must be a dict from DiLoCo.state_dict() (format "
                                       f"{kCheckpointFormat!r})")
        mine, theirs = self.outer.shared.tensors, checkpoint["shared"]
        if sorted(mine) != sorted(theirs):
            missing = sorted(set(mine) ^ set(theirs))[:3]
            raise InvalidArgumentError(f"the checkpoint is of another model: tensors {missing} differ")
        for name, t in mine.items():
            if tuple(theirs[name].shape) != tuple(t.shape):
                raise InvalidArgumentError(f"the checkpoint's '{name}' has shape {tuple(theirs[name].shape)}, "
                                           f"the model's {tuple(t.shape)}")
        self.inner.load_state_dict(checkpoint["inner"])
        with torch.no_grad():
            for name, t in mine.items():
                t.copy_(theirs[name])
        self.outer.shared.revision = int(checkpoint["revision"])
        self.local_step = self.outer.shared.revision * self.sync_every  # at that outer step
        self.outer.load_into_model()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        """One inner step (``closure`` goes to the inner optimizer); every ``sync_every``
        inner steps, also the outer step (a collective)."""
        loss = self.inner.step(closure)
        self.local_step += 1
        self._after_inner_step()
        return loss

    def _after_inner_step(self) -> None:
        if self.local_step % self.sync_every == 0:
            delta = self.outer.pseudo_gradient(0)
            self.last_world_size = self._reduce(delta)
            self.outer.apply(0, delta, self.outer_lr, self.outer_momentum, self.nesterov)
            self.outer.shared.revision += 1
            self.outer.load_into_model()
            self._boundary()

    def _reduce(self, delta: torch.Tensor, tag: int = 0) -> int:
        info = all_reduce_mean(self.comm, delta, self.quantization, tag)
        self.bytes_sent += info.bytes_sent
        return info.world_size

    def _boundary(self) -> None:
        """Admit newcomers, then make θ_global and the momentum identical everywhere.
        A coordinator lost meanwhile aborts the calls (AbortedError, state intact): once
        the peer is back with a coordinator, the whole boundary runs again."""
        for attempt in range(MAX_RETRIES):
            try:
                self.comm.update_topology()
                self._sync_state()
                break
            except AbortedError as e:
                if attempt == MAX_RETRIES - 1:
                    raise
                log.warning("outer boundary %d interrupted, running it again: %s", self.outer_step, e)
        self.comm.set_step(self.outer_step)  # `pcomm status` shows it
        if self.progress is not None:
            try:
                self.progress.report(self.local_step, outer_step=self.outer_step, comm=self.comm)
            except Exception as e:  # metadata must never stop training
                log.warning("progress report failed (training goes on): %s", e)

    def _sync_state(self, strategy: str = "enforce_popular") -> None:
        info = self.comm.sync_shared_state(self.outer.shared, strategy=strategy)
        if info.tensors_received:
            self.outer.load_into_model()
