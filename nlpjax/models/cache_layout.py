"""Where a decoding token goes in a fixed-size streaming KV cache, and which positions the
cached keys get: the attention-sink cache of StreamingLLM (Xiao et al., 2023,
https://arxiv.org/abs/2309.17453).

The cache has P prefix slots (the model's learned sink token and registers, never
evicted), ``n_sink`` slots for the first tokens of the text, and a ring of ``window``
slots for the most recent ones. Keys are cached before the rotary transform; at every
step each cached key is rotated by its position *inside the cache* (the prefix at
-P..-1, the kept first tokens at 0..n_sink-1, then the window's tokens in order of age),
so the positions the model sees never exceed ``n_sink + window - 1`` however long the
stream. Pure functions of the count of tokens seen: one compiled step serves every
position.
"""

import dataclasses

import jax.numpy as jnp

from nlpjax.types import Array, Bool, Int


@dataclasses.dataclass(frozen=True)
class StreamSlots:
    """Text-token slots of a streaming cache: ``n_sink`` first tokens, then a ring of the
    ``window`` most recent. ``window=0`` is a dense cache of ``n_sink`` tokens (full
    after ``n_sink`` tokens); ``n_sink=0`` is a plain sliding window."""

    n_sink: int
    window: int

    def __post_init__(self):
        if self.n_sink < 0 or self.window < 0 or self.n_sink + self.window == 0:
            raise ValueError(f"stream slots need n_sink, window >= 0 and some slot: {self}")

    @property
    def size(self) -> int:
        """Tokens the cache holds at once."""
        return self.n_sink + self.window


@dataclasses.dataclass(frozen=True)
class SlotLayout:
    """One decoding step's view of the cache (S = P + n_sink + window slots).

    Attributes:
      write_slot: the slot the new token's key and value go to.
      query_position: the new token's rotary position (its place inside the cache).
      key_positions_S: the rotary position of every slot's key.
      valid_S: slots holding a key the new token may attend to (itself included).
    """

    write_slot: Int[Array, ""]
    query_position: Int[Array, ""]
    key_positions_S: Int[Array, " S"]
    valid_S: Bool[Array, " S"]


def slot_layout(slots: StreamSlots, num_prefix: int, seen: Int[Array, ""]) -> SlotLayout:
    """The layout for the token that arrives after ``seen`` tokens (``seen`` traced)."""
    sink, window, P = slots.n_sink, slots.window, num_prefix
    recent = seen + 1 - sink  # tokens that went (or go) to the ring, this one included
    ring = jnp.arange(window)
    # The ring slot r holds the window's (r - recent) mod W-th oldest token once it wrapped.
    ring_positions = sink + jnp.where(recent > window, (ring - recent) % max(window, 1), ring)
    ring_slot = P + sink + (seen - sink) % max(window, 1)
    write_slot = jnp.where(seen < sink, P + seen, ring_slot)
    query_position = jnp.where(seen < sink, seen, sink + jnp.minimum(recent, window) - 1)
    key_positions = jnp.concatenate([jnp.arange(-P, 0), jnp.arange(sink), ring_positions])
    valid = jnp.concatenate(
        [jnp.ones(P, bool), jnp.arange(sink) <= seen, ring < jnp.maximum(recent, 0)]
    )
    return SlotLayout(
        write_slot.astype(jnp.int32),
        query_position.astype(jnp.int32),
        key_positions.astype(jnp.int32),
        valid,
    )
