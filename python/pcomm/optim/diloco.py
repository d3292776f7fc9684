"""DiLoCo: local training with any torch optimizer, and every H steps an outer step on
the averaged pseudo-gradient Δ = θ_global − θ_local (outer Nesterov SGD).

    opt = pcomm.optim.DiLoCo(model, torch.optim.AdamW(model.parameters()), comm, sync_every=50)
    for x, y in data:
        opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()

Outer steps are collectives: every peer's step() reaches them together. At each outer
boundary the peers also run update_topology() (admitting newcomers) and
sync_shared_state() (a newcomer receives θ_global and the outer momentum exactly).
Construct it on every peer right after connect(). Its first use (the first forward
through the model or any of its submodules, or the first zero_grad(), step(),
state_dict() or outer_step) is such a boundary too: the peer joins the run's state
there, so ``opt.load_state_dict(checkpoint)`` right after construction resumes from a
checkpoint as with any torch optimizer.
With ``progress=ProgressBoard(store)`` each outer boundary also publishes this peer's
step and throughput into the run's CRDT store (``pcomm progress`` shows them).
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

import torch

from ..errors import AbortedError, InvalidArgumentError
from ._outer import MAX_RETRIES, OuterState, all_reduce_mean, check_args, trainable

log = logging.getLogger("pcomm.optim")
kCheckpointFormat = "pcomm.diloco/1"
# Every boundary's state sync votes "offer": the newest revision (the run's progress, or
# the newest checkpoint loaded) wins, and popularity only decides among equal revisions.
# With "enforce_popular", fresh peers with the same initial model that outnumber the run
# at one boundary would roll it back to outer step 0.
kStateVote = "offer"


class _JoinOnForward:
    """The forward pre-hook on the model and every submodule: the first forward through
    any of them (``model.encoder(x)`` too) joins the run. It holds the optimizer weakly,
    so an optimizer dropped before its first use (say, rebuilt after a wrong checkpoint)
    neither lives on in the model nor syncs on its next forward. A pickled or deep-copied
    model (``torch.save(model)``, an EMA copy) carries an inert hook, not the optimizer;
    it removes itself at the copy's first forward."""

    def __init__(self, optimizer: "DiLoCo | None" = None) -> None:
        self._optimizer = None if optimizer is None else weakref.ref(optimizer)

    def __call__(self, module, _args) -> None:
        opt = None if self._optimizer is None else self._optimizer()
        if opt is not None:
            opt._join()
        elif self._optimizer is None:  # a copy's: nothing to join, ever
            for key in [k for k, h in module._forward_pre_hooks.items() if h is self]:
                del module._forward_pre_hooks[key]

    def __reduce__(self):
        return (_JoinOnForward, ())


def _remove_all(handles: list) -> None:
    for h in handles:
        h.remove()


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
        # The first boundary (see _join) runs at the first use, so that load_state_dict()
        # can come between construction and training. connect() (or the others'
        # update_topology) just returned, so everyone continues with that state sync.
        self._joined = False
        self._join_lock = threading.RLock()  # a forward from a second thread waits for the join
        hook = _JoinOnForward(self)
        self._join_hooks: list = []
        weakref.finalize(self, _remove_all, self._join_hooks)
        for m in model.modules():
            if not isinstance(m, torch.jit.ScriptModule):  # they take no hooks: the root's or step() joins
                self._join_hooks.append(m.register_forward_pre_hook(hook))
        if checkpoint is not None:
            self.load_state_dict(checkpoint)

    def _join(self) -> None:
        """The construction boundary: a state sync that gives this peer the run's
        θ_global, momentum and outer step: the newest revision wins (kStateVote), so a
        loaded checkpoint beats freshly initialised peers, and newcomers never roll back
        the run however many they are."""
        if self._joined:
            return
        with self._join_lock:
            if self._joined:
                return
            self._admit_and_sync(admit=False)
            _remove_all(self._join_hooks)
            self.local_step = self.outer.shared.revision * self.sync_every  # the run's phase
            self.outer.load_into_model()
            self.comm.set_step(self.outer.shared.revision)
            self._joined = True  # last: another thread's use waits on the lock until here

    def _fragments(self, params: list) -> list[list[int]]:
        return [list(range(len(params)))]

    @property
    def outer_step(self) -> int:
        """Outer steps applied so far in the run (the shared state's revision). Peers end
        together with ``while opt.outer_step < N``: each outer step is a collective, so
        every peer leaves the loop after the same one."""
        self._join()
        return self.outer.shared.revision

    @property
    def shared_state(self):
        """The SharedState holding θ_global and the outer momentum (``state`` is the
        torch Optimizer's: the inner optimizer's per-parameter state)."""
        self._join()
        return self.outer.shared

    def state_dict(self) -> dict:  # type: ignore[override]
        """A checkpoint: the inner optimizer's state, θ_global, the outer momentum and the
        outer step (``torch.save`` it). It describes the last outer step, so take it right
        after one (``opt.local_step % opt.sync_every == 0``): inner steps since then are not
        in it (and with StreamingDiLoCo, fragments stepped since would step again). With
        AsyncDiLoCo, ``flush()`` first, on every peer (it is a collective). Resume with
        ``load_state_dict()`` right after construction (or ``checkpoint=``)."""
        self._join()
        return {
            "format": kCheckpointFormat,
            "inner": self.inner.state_dict(),
            "shared": {name: t.detach().clone() for name, t in self.outer.shared.tensors.items()},
            "revision": self.outer.shared.revision,
        }

    def load_state_dict(self, state_dict: dict) -> None:  # type: ignore[override]
        """Loads a checkpoint from ``state_dict()``, before the optimizer or the model is
        used. At the first boundary this peer offers it to the others: the newest offer
        (highest outer step) wins, so one peer's checkpoint resumes a run of fresh peers,
        and peers that each load their own end on the newest. An offer never rolls back
        peers further ahead (a peer restarted into a live run takes the run's state). A
        peer whose offer lost keeps the inner optimizer state it loaded."""
        if self._joined:
            raise InvalidArgumentError(
                "load_state_dict() must come right after constructing the optimizer, before the first "
                "forward, zero_grad(), step(), state_dict() or outer_step: this peer has already taken the "
                f"run's state (outer step {self.outer.shared.revision}); build a new optimizer to load a checkpoint")
        if not isinstance(state_dict, dict) or state_dict.get("format") != kCheckpointFormat:
            raise InvalidArgumentError("checkpoint must be a dict from DiLoCo.state_dict() (format "
                                       f"{kCheckpointFormat!r})")
        mine, theirs = self.outer.shared.tensors, state_dict["shared"]
        if sorted(mine) != sorted(theirs):
            missing = sorted(set(mine) ^ set(theirs))[:3]
            raise InvalidArgumentError(f"the checkpoint is of another model: tensors {missing} differ")
        for name, t in mine.items():
            if tuple(theirs[name].shape) != tuple(t.shape):
                raise InvalidArgumentError(f"the checkpoint's '{name}' has shape {tuple(theirs[name].shape)}, "
                                           f"the model's {tuple(t.shape)}")
        self.inner.load_state_dict(state_dict["inner"])
        # torch's load_state_dict replaces the inner optimizer's groups and state: share
        # the new ones, or schedulers built on this optimizer would set a dead lr.
        self.param_groups, self.state = self.inner.param_groups, self.inner.state
        with torch.no_grad():
            for name, t in mine.items():
                t.copy_(theirs[name])
        self.outer.shared.revision = int(state_dict["revision"])

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._join()
        self.inner.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        """One inner step (``closure`` goes to the inner optimizer); every ``sync_every``
        inner steps, also the outer step (a collective)."""
        self._join()
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
        """Admit newcomers, then make θ_global and the momentum identical everywhere."""
        self._admit_and_sync(admit=True)
        self.comm.set_step(self.outer_step)  # `pcomm status` shows it
        if self.progress is not None:
            try:
                self.progress.report(self.local_step, outer_step=self.outer_step, comm=self.comm)
            except Exception as e:  # metadata must never stop training
                log.warning("progress report failed (training goes on): %s", e)

    def _admit_and_sync(self, admit: bool) -> None:
        """update_topology() (unless ``admit`` is False: the first boundary, where connect()
        or the others' update_topology just admitted this peer), then the state sync. A
        coordinator lost meanwhile aborts the calls (AbortedError, state intact): once the
        peer is back with a coordinator, the whole boundary runs again, admission included,
        as it does on every other peer."""
        for attempt in range(MAX_RETRIES):
            try:
                if admit or attempt:
                    self.comm.update_topology()
                info = self.comm.sync_shared_state(self.outer.shared, strategy=kStateVote)
                if info.tensors_received:
                    self.outer.load_into_model()
                return
            except AbortedError as e:
                if attempt == MAX_RETRIES - 1:
                    raise
                log.warning("outer boundary %d interrupted, running it again: %s", self.outer.shared.revision, e)
