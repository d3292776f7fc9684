"""StreamingDiLoCo: the parameters are split into P fragments, and fragment p has its
outer step at inner steps where (step - p*H/P) is a multiple of H. Each outer all-reduce
moves only a fragment, so the peak bandwidth is about 1/P of DiLoCo's, spread over the
round; optional wire quantization cuts it further.

Membership boundaries (update_topology, sync_shared_state) happen once per round, at
fragment 0's outer step.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidArgumentError
from .diloco import DiLoCo


class StreamingDiLoCo(DiLoCo):
    """Streaming DiLoCo. Extra argument: fragments (P, default 4)."""

    def __init__(self, *args: Any, fragments: int = 4, **kwargs: Any) -> None:
        if isinstance(fragments, bool) or not isinstance(fragments, int) or fragments < 1:
            raise InvalidArgumentError(f"fragments must be a positive int, got {fragments!r}")
        if isinstance(kwargs.get("sync_every"), int) and kwargs["sync_every"] < fragments:
            raise InvalidArgumentError("sync_every must be at least the number of fragments")
        self.fragment_count = fragments
        # A newcomer takes the others' phase at its first boundary (DiLoCo._join sets
        # local_step from the outer step): fragment schedules depend on the step count.
        super().__init__(*args, **kwargs)

    def _fragments(self, params: list) -> list[list[int]]:
        """Contiguous groups of parameters of about equal size."""
        total = sum(p.numel() for p in params)
        groups: list[list[int]] = [[] for _ in range(self.fragment_count)]
        acc = 0
        for i, p in enumerate(params):
            index = min(self.fragment_count - 1, acc * self.fragment_count // max(total, 1))
            groups[index].append(i)
            acc += p.numel()
        return groups

    def _after_inner_step(self) -> None:
        for f in range(self.fragment_count):
            offset = f * self.sync_every // self.fragment_count
            if self.local_step < offset or (self.local_step - offset) % self.sync_every != 0:
                continue
            if (self.local_step - offset) == 0:
                continue  # a fragment's first outer step comes a full round after its offset
            delta = self.outer.pseudo_gradient(f)
            self.last_world_size = self._reduce(delta, tag=f)
            self.outer.apply(f, delta, self.outer_lr, self.outer_momentum, self.nesterov)
            self.outer.load_into_model(f)
            if f == 0:
                self.outer.shared.revision += 1
                self._boundary()


__all__ = ["StreamingDiLoCo"]
