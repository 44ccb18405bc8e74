"""Batched search over a cached next-token function: sampling loops and beam search.

The searches know nothing of the model: ``step_fn(tokens_N1, cache) -> (logits_N1V,
cache)`` feeds one token per row and returns the next-token logits and the updated cache
(any pytree whose array leaves with a leading axis of N rows follow the rows). Each
search is one ``lax.while_loop``, so it jits whole and stops as soon as every row is
done. Beam search follows T5X (``t5x/decoding.py``): 2W candidates per step, the best W
unfinished ones stay alive, the ended ones among the best W candidates join the finished
hypotheses, which compete on ``log p / ((5 + length) / 6) ** alpha`` (Wu et al., 2016,
https://arxiv.org/abs/1609.08144).
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from nlpjax.inference.decode import SamplingConfig, ban_ids, sample

StepFn = Callable[[jax.Array, Any], tuple[jax.Array, Any]]
NEG_INF = -1e30  # finite, so arithmetic on "impossible" scores stays well defined


def length_penalty(length, alpha: float):
    """T5X's brevity penalty ``((5 + length) / 6) ** alpha`` (1 at alpha 0)."""
    return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def sample_loop(
    step_fn: StepFn,
    cache: Any,
    batch_size: int,
    max_len: int,
    *,
    start_id: int,
    eos_id: int,
    sampling: SamplingConfig,
    rng: jax.Array,
    banned_V: jax.Array | None = None,
    pad_id: int = 0,
) -> Int[Array, "B T"]:
    """Greedy (``temperature=0``) or filtered sampling of up to ``max_len`` tokens per row.

    A row that has emitted ``eos_id`` gets ``pad_id`` afterwards; the loop ends when all
    rows have, or after ``max_len`` tokens. Token ``t`` uses ``fold_in(rng, t)``.
    """
    tokens = jnp.full((batch_size, max_len + 1), pad_id, jnp.int32).at[:, 0].set(start_id)

    def cond(state):
        t, _, _, done_B = state
        return (t < max_len) & ~jnp.all(done_B)

    def body(state):
        t, tokens, cache, done_B = state
        last_B1 = jax.lax.dynamic_slice_in_dim(tokens, t, 1, axis=1)
        logits, cache = step_fn(last_B1, cache)
        next_B = sample(logits[:, -1], jax.random.fold_in(rng, t), sampling, banned_V)
        next_B = jnp.where(done_B, pad_id, next_B)
        tokens = jax.lax.dynamic_update_slice_in_dim(tokens, next_B[:, None], t + 1, axis=1)
        return t + 1, tokens, cache, done_B | (next_B == eos_id)

    done = jnp.zeros((batch_size,), bool)
    _, tokens, _, _ = jax.lax.while_loop(cond, body, (jnp.int32(0), tokens, cache, done))
    return tokens[:, 1:]


def gather_rows(tree: Any, rows_BW: Int[Array, "B W"], width: int) -> Any:
    """Reorders the (B * W)-row leaves of ``tree`` so row (b, w) takes row (b, rows_BW[b, w])."""

    def one(leaf):
        if jnp.ndim(leaf) == 0 or leaf.shape[0] != rows_BW.shape[0] * width:
            return leaf  # a shared scalar, e.g. the cache's write index
        per_beam = leaf.reshape(rows_BW.shape[0], width, *leaf.shape[1:])
        index = rows_BW.reshape(rows_BW.shape + (1,) * (per_beam.ndim - 2))
        return jnp.take_along_axis(per_beam, index, axis=1).reshape(leaf.shape)

    return jax.tree_util.tree_map(one, tree)


def _top(scores_BC, k: int, *arrays_BC):
    """The ``k`` best columns of ``scores_BC`` (sorted, best first) and of each array."""
    top_scores, cols = jax.lax.top_k(scores_BC, k)
    picked = []
    for a in arrays_BC:
        index = cols.reshape(cols.shape + (1,) * (a.ndim - 2))
        picked.append(jnp.take_along_axis(a, index, axis=1))
    return top_scores, cols, picked


def beam_search(
    step_fn: StepFn,
    cache: Any,
    batch_size: int,
    beam_size: int,
    max_len: int,
    *,
    start_id: int,
    eos_id: int,
    alpha: float = 0.6,
    banned_V: jax.Array | None = None,
    pad_id: int = 0,
) -> tuple[Int[Array, "B W T"], Float[Array, "B W"]]:
    """The ``beam_size`` best sequences per row and their length-normalised scores.

    ``cache`` holds B * W rows (row b * W + w is beam w of input b). A sequence ends at
    ``eos_id`` (kept, followed by ``pad_id``) or at ``max_len`` tokens. Its score is its
    log-probability divided by ``length_penalty(length, alpha)``, its length counting
    the ``eos_id``. A candidate that ends ranks among the step's best W or is dropped (so
    ``beam_size=1, alpha=0`` returns the greedy output). Results are sorted best first.
    The search stops early once no live beam can still beat the worst kept hypothesis of
    every row.
    """
    B, W = batch_size, beam_size
    seqs = jnp.full((B, W, max_len + 1), pad_id, jnp.int32).at[:, :, 0].set(start_id)
    alive_lp = jnp.full((B, W), NEG_INF).at[:, 0].set(0.0)  # all beams start as beam 0
    finished = (seqs, jnp.full((B, W), NEG_INF))
    best_possible = lambda lp: lp[:, 0] / length_penalty(max_len, alpha)  # noqa: E731

    def cond(state):
        t, _, alive_lp, _, (_, fin_scores) = state
        can_improve = best_possible(alive_lp) > jnp.min(fin_scores, axis=1)
        return (t < max_len) & jnp.any(can_improve)

    def body(state):
        t, seqs, alive_lp, cache, (fin_seqs, fin_scores) = state
        last_N1 = seqs[:, :, t].reshape(B * W, 1)
        logits, cache = step_fn(last_N1, cache)
        log_probs = jax.nn.log_softmax(ban_ids(logits[:, -1], banned_V).astype(jnp.float32))
        V = log_probs.shape[-1]
        cand_lp = (alive_lp[:, :, None] + log_probs.reshape(B, W, V)).reshape(B, W * V)
        cand_lp, cols, _ = _top(cand_lp, 2 * W)  # beam = col // V, token = col % V
        beams, tokens = cols // V, cols % V
        cand_seqs = jnp.take_along_axis(seqs, beams[:, :, None], axis=1)
        cand_seqs = jax.lax.dynamic_update_slice_in_dim(
            cand_seqs, tokens[:, :, None].astype(jnp.int32), t + 1, axis=2
        )
        # A candidate ends at the end id or the length limit, if it ranks among the best W
        # (as Hugging Face's beam scorer has it: so W = 1 without a length penalty is greedy).
        top_w = jnp.arange(2 * W)[None, :] < W
        ends = ((tokens == eos_id) | (t + 1 == max_len)) & top_w & (cand_lp > NEG_INF / 2)
        # The best W candidates that go on stay alive (with their caches).
        alive_lp, _, (seqs, from_beam) = _top(
            jnp.where(tokens == eos_id, NEG_INF, cand_lp), W, cand_seqs, beams
        )
        cache = gather_rows(cache, from_beam, W)
        # Ended candidates compete with the kept hypotheses on the normalised score.
        scores = jnp.where(ends, cand_lp / length_penalty(t + 1, alpha), NEG_INF)
        fin_scores, _, (fin_seqs,) = _top(
            jnp.concatenate([fin_scores, scores], axis=1),
            W,
            jnp.concatenate([fin_seqs, cand_seqs], axis=1),
        )
        return t + 1, seqs, alive_lp, cache, (fin_seqs, fin_scores)

    state = (jnp.int32(0), seqs, alive_lp, cache, finished)
    *_, (fin_seqs, fin_scores) = jax.lax.while_loop(cond, body, state)
    return fin_seqs[:, :, 1:], fin_scores
