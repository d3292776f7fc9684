"""AsyncDiLoCo: DiLoCo whose outer all-reduce overlaps the next round's inner steps.

At the end of round t the peer launches the all-reduce of Δ_t (all_reduce_async) and
starts round t+1 from θ_global as it stands; at the end of round t+1 it waits for Δ_t's
average and applies that outer step, one round late. Every round therefore starts from
the same θ_global on every peer, and the communication of a round is hidden behind the
computation of the next.

A peer that joins receives θ_global at its first boundary and, since the others then
still apply the in-flight Δ of the round before, receives it again at the next boundary
(every boundary syncs): it is bit-identical from then on.
"""

from __future__ import annotations

from typing import Any

import torch

from ._outer import finish_handle
from .diloco import DiLoCo


class AsyncDiLoCo(DiLoCo):
    """DiLoCo with a one-round delayed outer step. Same arguments as DiLoCo."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._pending: tuple[Any, torch.Tensor] | None = None
        super().__init__(*args, **kwargs)

    def _after_inner_step(self) -> None:
        if self.local_step % self.sync_every != 0:
            return
        delta = self.outer.pseudo_gradient(0)  # relative to θ_global at the round's start
        self._apply_pending()
        # Launch this round's average; it runs while the next round trains.
        handle = self.comm.all_reduce_async(delta, op="avg", quantization=self.quantization)
        self._pending = (handle, delta)
        self.outer.load_into_model()
        self._boundary()

    def _apply_pending(self) -> None:
        if self._pending is None:
            return
        handle, delta = self._pending
        self._pending = None
        info = finish_handle(self.comm, handle, delta, self.quantization, 0)
        self.bytes_sent += info.bytes_sent
        self.last_world_size = info.world_size
        self.outer.apply(0, delta, self.outer_lr, self.outer_momentum, self.nesterov)
        self.outer.shared.revision += 1

    def flush(self) -> None:
        """Applies the outer step still in flight (call it once after the last step, on
        every peer: it ends with an outer boundary, a collective)."""
        self._join()
        self._apply_pending()
        self.outer.load_into_model()
        self._boundary()


__all__ = ["AsyncDiLoCo"]
