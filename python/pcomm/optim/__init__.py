"""DiLoCo-style optimizers that wrap any torch optimizer: DiLoCo (synchronous),
AsyncDiLoCo (outer all-reduce overlapped with the next round), StreamingDiLoCo
(fragments synced at staggered steps)."""

from .async_diloco import AsyncDiLoCo
from .diloco import DiLoCo
from .streaming import StreamingDiLoCo

__all__ = ["DiLoCo", "AsyncDiLoCo", "StreamingDiLoCo"]
