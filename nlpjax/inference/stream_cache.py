"""Decoding past the context with a fixed-size cache: the modes of ``--cache``.

StreamingLLM (Xiao et al., 2023, https://arxiv.org/abs/2309.17453): keeping the keys and
values of the first few tokens (attention sinks) next to a window of recent ones lets a
model trained on a short context run on an endless stream. Four modes, each one step per
token with fixed shapes (one compilation whatever the stream's length):

* ``dense``: every token kept, at its absolute position, up to ``capacity`` tokens
  (fixed shapes cannot grow; more is an error naming the flag to raise);
* ``window``: the ``window`` most recent tokens only (a ring buffer);
* ``sink_window``: the first ``n_sink`` tokens plus the ``window`` most recent;
* ``recompute``: no cache: the model runs from scratch on the last ``window`` tokens
  for every token (the slow reference that ``window`` approximates).

The cached modes store keys before RoPE and rotate them by their position inside the
cache at every step (``nlpjax.models.cache_layout``). A model's learned sink token and
registers (``model.sink_token``, ``model.num_registers``) sit in front of the ``n_sink``
slots at positions -P..-1 and are never evicted, in every mode: with ``window`` such a
model still keeps its learned sink.
"""

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from nlpjax.errors import ConfigError
from nlpjax.inference.decode import SamplingConfig, banned_mask, collect_stream, sample
from nlpjax.inference.kv_cache import broadcast_cache, init_cache, prefix_cache
from nlpjax.models.cache_layout import StreamSlots

MODES = ("dense", "window", "sink_window", "recompute")
DEFAULT_N_SINK = 4  # Xiao et al.: four initial tokens suffice


@dataclasses.dataclass(frozen=True)
class StreamConfig:
    """``--cache`` and its flags. 0 means "from the model" for ``window`` and ``capacity``.

    Attributes:
      mode: one of ``MODES``.
      n_sink: first tokens kept (``sink_window`` only).
      window: recent tokens kept (``window``, ``sink_window``: default the model's
        context minus ``n_sink``; ``recompute``: default the context).
      capacity: tokens a ``dense`` cache holds (default the model's context).
    """

    mode: str = "sink_window"
    n_sink: int | None = None
    window: int = 0
    capacity: int = 0


def resolve(cfg: StreamConfig, model_cfg, where: str = "the checkpoint's config") -> StreamConfig:
    """``cfg`` checked against the model (``DecoderConfig``), defaults filled in.

    Every mistake is a ``ConfigError`` naming the flag and how to fix it; ``where`` names
    the file the model's context comes from.
    """
    if cfg.mode not in MODES:
        raise ConfigError(f"unknown --cache={cfg.mode!r}; choose one of {', '.join(MODES)}")
    context = model_cfg.max_len
    if cfg.n_sink is not None and cfg.n_sink < 0:
        raise ConfigError(f"--n_sink={cfg.n_sink} must be >= 0 (0 keeps no first tokens)")
    if cfg.n_sink and cfg.mode != "sink_window":
        raise ConfigError(f"--n_sink applies to --cache=sink_window only (got --cache={cfg.mode})")
    if cfg.window < 0 or cfg.capacity < 0:
        raise ConfigError("--window and --capacity must be >= 0 (0: the model's context)")
    if cfg.capacity and cfg.mode != "dense":
        raise ConfigError(f"--capacity applies to --cache=dense only (got --cache={cfg.mode})")
    if cfg.window and cfg.mode == "dense":
        raise ConfigError(
            "--window does not apply to --cache=dense (it keeps every token up to --capacity)"
        )
    n_sink = (DEFAULT_N_SINK if cfg.n_sink is None else cfg.n_sink) * (cfg.mode == "sink_window")
    if cfg.mode == "dense":
        capacity = cfg.capacity or context
        if capacity > context and model_cfg.positions == "learned":
            raise ConfigError(
                f"--capacity={capacity} exceeds model.max_len={context} in {where}, the "
                "most learned positions this model has; lower --capacity"
            )
        return StreamConfig("dense", 0, 0, capacity)
    window = cfg.window or context - n_sink
    if window < 1:
        raise ConfigError(
            f"--n_sink={n_sink} leaves no window in the model's context of {context} "
            f"(model.max_len in {where}); lower --n_sink"
        )
    if n_sink + window > context:
        what = f"--n_sink={n_sink} + --window={window}" if n_sink else f"--window={window}"
        raise ConfigError(
            f"{what} exceeds the model's context model.max_len={context} in {where}; "
            f"lower --window to at most {context - n_sink}"
        )
    if cfg.mode != "recompute" and model_cfg.positions != "rope":
        raise ConfigError(
            f"--cache={cfg.mode} re-positions cached keys, which needs model.positions=rope "
            f"(this model uses {model_cfg.positions}, {where}); use --cache=recompute"
        )
    return StreamConfig(cfg.mode, n_sink, window, 0)


def describe(cfg: StreamConfig) -> str:
    """One line naming a resolved mode and its sizes."""
    sizes = {
        "dense": f"capacity {cfg.capacity}",
        "window": f"window {cfg.window}",
        "sink_window": f"n_sink {cfg.n_sink}, window {cfg.window}",
        "recompute": f"window {cfg.window}",
    }
    return f"cache {cfg.mode} ({sizes[cfg.mode]})"


class CachedStepper:
    """One token per call through a fixed-size streaming KV cache (dense, window, sink_window).

    ``step(params, state, token_B) -> (logits_BV, state)`` is pure (jit, scan it); the
    state is the decoder's ``cache`` collection. ``limit``: tokens it can take (None:
    unbounded).
    """

    def __init__(self, model, cfg: StreamConfig):
        sizes = {  # (n_sink, window) of the slots
            "dense": (cfg.capacity, 0),
            "window": (0, cfg.window),
            "sink_window": (cfg.n_sink, cfg.window),
        }
        slots = StreamSlots(*sizes[cfg.mode])
        self.model = model.clone(stream=slots)
        self.limit = cfg.capacity if cfg.mode == "dense" else None

    def init(self, params, batch: int) -> Any:
        """A cache holding only the model's learned prefix (sink, registers), if any."""
        if self.model.config.num_prefix == 0:
            return init_cache(self.model, batch)
        model = self.model
        return broadcast_cache(jax.jit(lambda p: prefix_cache(model, p))(params), batch)

    def step(self, params, state, token_B: Int[Array, " B"]) -> tuple[jax.Array, Any]:
        logits_B1V, updated = self.model.apply(
            {"params": params, "cache": state}, token_B[:, None], decode=True, mutable=["cache"]
        )
        return logits_B1V[:, 0], updated["cache"]


class RecomputeStepper:
    """The reference: each token re-runs the model on (at most) the last ``window`` tokens.

    The state is a (B, window) buffer of the latest tokens, oldest first, and the count
    seen. While fewer than ``window`` tokens have come, the buffer's tail is unused and the
    causal mask keeps it out of the logits read; one shape, one compilation.
    """

    limit = None

    def __init__(self, model, cfg: StreamConfig):
        self.model, self.window = model, cfg.window

    def init(self, params, batch: int) -> tuple[jax.Array, jax.Array]:
        del params
        return jnp.zeros((batch, self.window), jnp.int32), jnp.zeros((), jnp.int32)

    def step(self, params, state, token_B: Int[Array, " B"]) -> tuple[jax.Array, Any]:
        buffer_BW, seen = state
        W = self.window
        filling = jax.lax.dynamic_update_slice(buffer_BW, token_B[:, None], (0, seen))
        shifted = jnp.concatenate([buffer_BW[:, 1:], token_B[:, None]], axis=1)
        buffer_BW = jnp.where(seen < W, filling, shifted)
        logits_BWV = self.model.apply({"params": params}, buffer_BW)
        last = jnp.minimum(seen, W - 1)
        logits_BV = jax.lax.dynamic_index_in_dim(logits_BWV, last, axis=1, keepdims=False)
        return logits_BV, (buffer_BW, seen + 1)


def on_device(tree, device=None):
    """``tree`` committed to one device (default the first): parameters restored onto a
    mesh and a fresh state would otherwise differ in placement from the state a step
    returns, and the second step would compile again."""
    return jax.device_put(tree, device or jax.devices()[0])


def stepper(model, cfg: StreamConfig) -> CachedStepper | RecomputeStepper:
    """The stepper of a resolved ``cfg``."""
    if cfg.mode == "recompute":
        return RecomputeStepper(model, cfg)
    return CachedStepper(model, cfg)


def check_room(limit: int | None, needed: int, what: str) -> None:
    """A ``ConfigError`` when a dense cache of ``limit`` tokens cannot take ``needed``."""
    if limit is not None and needed > limit:
        raise ConfigError(
            f"--cache=dense holds --capacity={limit} tokens but {what} needs {needed}; raise "
            "--capacity (fixed shapes: a dense cache cannot grow) or use --cache=sink_window"
        )


class StreamGenerator:
    """Samples without bound through a stepper (the token ``Generator`` of ``--cache``).

    The prompt goes in one token per step through the same compiled step as the sampled
    tokens, so nothing is compiled per prompt length. ``stream``/``generate`` match
    ``nlpjax.inference.decode.Generator``'s.
    """

    def __init__(
        self,
        token_stepper,
        params,
        sampling: SamplingConfig,
        banned_ids: Sequence[int] = (),
        append_ids: Sequence[int] = (),
    ):
        self.stepper, self.params = token_stepper, on_device(params)
        self.append_ids = np.asarray(append_ids, np.int32).reshape(-1)
        vocab = token_stepper.model.config.vocab_size
        mask = banned_mask(vocab, banned_ids)
        banned_V = None if mask is None else jnp.asarray(mask)

        def step(params, state, token_B, rng):
            logits_BV, state = token_stepper.step(params, state, token_B)
            return sample(logits_BV, rng, sampling, banned_V), state

        self._step = jax.jit(step)

    def stream(
        self, prompt_BL: np.ndarray, max_new_tokens: int, seed: int = 0
    ) -> Iterator[Int[np.ndarray, " B"]]:
        """Yields the (B,) sampled ids one position at a time, ``max_new_tokens`` times."""
        prompt_BL = np.atleast_2d(np.asarray(prompt_BL, np.int32))
        if prompt_BL.shape[1] == 0:
            raise ValueError("the prompt is empty: give at least one token")
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if self.append_ids.size:
            suffix = np.broadcast_to(self.append_ids, (prompt_BL.shape[0], self.append_ids.size))
            prompt_BL = np.concatenate([prompt_BL, suffix], axis=1)
        # the last sampled token is never fed back
        needed = prompt_BL.shape[1] + max(max_new_tokens - 1, 0)
        check_room(self.stepper.limit, needed, "the prompt plus --max_new_tokens")
        if max_new_tokens == 0:
            return
        key = jax.random.PRNGKey(seed)
        state = on_device(self.stepper.init(self.params, prompt_BL.shape[0]))
        first = jax.random.fold_in(key, 0)  # only the prompt's last step's sample is kept
        for t in range(prompt_BL.shape[1]):
            next_B, state = self._step(self.params, state, jnp.asarray(prompt_BL[:, t]), first)
        for i in range(max_new_tokens):
            token = np.asarray(next_B)
            yield token
            if i + 1 == max_new_tokens:
                break
            rng = jax.random.fold_in(key, i + 1)
            next_B, state = self._step(self.params, state, jnp.asarray(token), rng)

    def generate(self, prompt_BL: np.ndarray, max_new_tokens: int, seed: int = 0) -> np.ndarray:
        """Returns the (B, max_new_tokens) sampled ids following ``prompt_BL``."""
        return collect_stream(self.stream, prompt_BL, max_new_tokens, seed)


def chunk_scorer(token_stepper, chunk: int) -> Callable:
    """A jitted ``(params, state, tokens_C, targets_C) -> (nll_C, state)``: ``chunk``
    steps in one ``lax.scan`` (one dispatch), each the negative log-likelihood (nats) of
    the target after feeding the token. Batch 1."""

    def score(params, state, tokens_C, targets_C):
        def one(state, pair):
            token, target = pair
            logits_1V, state = token_stepper.step(params, state, token[None])
            logp_V = jax.nn.log_softmax(logits_1V[0].astype(jnp.float32))
            return state, -logp_V[target]

        state, nll_C = jax.lax.scan(one, state, (tokens_C, targets_C), length=chunk)
        return nll_C, state

    return jax.jit(score)


def stream_nll(
    token_stepper,
    params,
    tokens_N: Int[np.ndarray, " N"],
    chunk: int = 256,
    on_chunk: Callable[[int], None] | None = None,
) -> Float[np.ndarray, " N-1"]:
    """Per-position negative log-likelihood of ``tokens_N[1:]``, token by token.

    The stream is fed in ``chunk``-token scans (the last one padded and its padding
    dropped, so every chunk has one shape); ``on_chunk(n)`` hears the positions done.
    """
    tokens_N = np.asarray(tokens_N, np.int32)
    if tokens_N.size < 2:
        raise ConfigError(f"the text has {tokens_N.size} tokens; streaming needs at least 2")
    check_room(token_stepper.limit, tokens_N.size - 1, "the stream (--max_tokens)")
    score = chunk_scorer(token_stepper, chunk)
    inputs, targets = tokens_N[:-1], tokens_N[1:]
    count = inputs.size
    pad = -count % chunk
    inputs = np.concatenate([inputs, np.zeros(pad, np.int32)])
    targets = np.concatenate([targets, np.zeros(pad, np.int32)])
    params = on_device(params)
    state = on_device(token_stepper.init(params, 1))
    out = []
    for start in range(0, inputs.size, chunk):
        stop = start + chunk
        nll_C, state = score(params, state, inputs[start:stop], targets[start:stop])
        out.append(np.asarray(nll_C))
        if on_chunk is not None:
            on_chunk(min(stop, count) - start)
    return np.concatenate(out)[:count]
