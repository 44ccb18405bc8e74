"""Word2vec on the device: skip-gram and CBOW with negative sampling, full-softmax skip-gram.

Mikolov et al. 2013 (https://arxiv.org/abs/1310.4546) and the word2vec C code. The host
ships a chunk of token ids; the functions here subsample frequent words, build (center,
context) pairs with the dynamic window and draw negatives from an alias table, all from a
JAX RNG, so the cost per step does not depend on the vocabulary. The negative-sampling
losses read gathered rows (``table[ids]``), never whole tables, and ``sparse_sgd`` /
``sparse_adagrad`` scatter their gradients back into the touched rows only.

Two tables, as word2vec: ``center`` (its ``syn0``, uniform in +-0.5/E) and ``context``
(its ``syn1neg``, zeros). The score of context o for center c is ``context[o] . center[c]``.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nlpjax.models.layers import param_with_axes
from nlpjax.models.model_config import ModelConfig
from nlpjax.types import Array, Bool, Float, Int, PRNGKey

OBJECTIVES = ("skipgram", "cbow", "softmax")
# "pair": N fresh negatives per (center, context) pair (word2vec; skip-gram only);
# "center": N per center, weighted by its number of pairs; "block": N per block of
# 2 * window consecutive centers (a batched matmul); "batch": ``batch_negatives`` draws
# shared by the whole chunk (one matmul), weighted N / draws.
NEGATIVE_SHARING = ("pair", "center", "block", "batch")
TABLE_AXES = ("vocab", "embed")


@dataclasses.dataclass(frozen=True)
class SGNSConfig(ModelConfig):
    """Shape and objective of the word2vec model. ``vocab_size=0``: from the vocabulary."""

    vocab_size: int = 0
    embed_dim: int = 100
    objective: str = "skipgram"
    window: int = 5
    negatives: int = 5
    negative_sharing: str = "batch"  # gensim's quality at 1,024-token chunks (benchmarks/)
    batch_negatives: int = 64

    def __post_init__(self):
        check = self.check

        check(self.vocab_size >= 0, "model.vocab_size must be >= 0 (0: from the vocabulary)")
        check(self.embed_dim > 0, "model.embed_dim must be > 0")
        check(self.objective in OBJECTIVES, f"model.objective must be one of {OBJECTIVES}")
        check(self.window > 0, "model.window must be > 0")
        check(self.negatives > 0, "model.negatives must be > 0")
        check(self.batch_negatives > 0, "model.batch_negatives must be > 0")
        check(
            self.negative_sharing in NEGATIVE_SHARING,
            f"model.negative_sharing must be one of {NEGATIVE_SHARING}",
        )
        check(
            not (self.objective == "cbow" and self.negative_sharing == "pair"),
            "model.negative_sharing='pair' is skip-gram only (CBOW has one example per "
            "center): use 'center' or 'batch'",
        )

    @property
    def num_contexts(self) -> int:
        """C: context slots per center (both sides of the largest window)."""
        return 2 * self.window


def center_init(key: PRNGKey, shape: tuple, dtype=jnp.float32) -> Array:
    """word2vec's input-vector init: uniform in [-0.5/E, 0.5/E) (E = ``shape[-1]``)."""
    return ((jax.random.uniform(key, shape, jnp.float32) - 0.5) / shape[-1]).astype(dtype)


class SGNS(nn.Module):
    """The two (V, E) tables with logical axes ("vocab", "embed"); ``__call__`` returns them."""

    config: SGNSConfig

    @nn.compact
    def __call__(self) -> tuple[Float[Array, "V E"], Float[Array, "V E"]]:
        shape = (self.config.vocab_size, self.config.embed_dim)
        center = param_with_axes(self, "center", center_init, shape, TABLE_AXES)
        context = param_with_axes(self, "context", nn.initializers.zeros, shape, TABLE_AXES)
        return center, context


def host_tables(config: SGNSConfig, seed: int) -> dict[str, np.ndarray]:
    """``SGNS``'s initial tables drawn on the host: center as ``center_init`` (from
    numpy's generator seeded by ``seed``, so not the same draws), context zeros."""
    shape = (config.vocab_size, config.embed_dim)
    center = (np.random.default_rng(seed).random(shape, np.float32) - 0.5) / shape[-1]
    return {"center": center, "context": np.zeros(shape, np.float32)}


# -- the token stream on the device -----------------------------------------------------


def subsample(
    ids_L: Int[Array, " L"],
    keep_V: Float[Array, " V"],
    rng: PRNGKey,
    segments_L: Int[Array, " L"] | None = None,
    capacity: int | None = None,
) -> tuple[Int[Array, " M"], Bool[Array, " M"], Int[Array, " M"], Int[Array, ""]]:
    """Frequent-word subsampling: each token kept with ``keep_V[id]``, survivors packed left.

    As word2vec, dropped words are removed before windows are formed, so a window reaches
    past them. ``keep_V`` is ``data.transforms.keep_probabilities`` (0 for ids never trained
    on, e.g. padding).

    Args:
      ids_L: a chunk of the token stream.
      keep_V: keep probability per id.
      rng: the step's key for this draw.
      segments_L: sentence/document number per token (windows never cross one).
      capacity: M, the length of the result (default L). Subsampling usually drops a
        large share of the tokens, so the pairs and losses downstream can run on
        ``kept_capacity(...)`` slots instead of L; survivors past M are lost and counted.

    Returns:
      (ids, valid, segments, overflow): the kept tokens first, in order, then padding
      (valid False); overflow = kept tokens that did not fit in M.
    """
    length = ids_L.shape[0]
    capacity = length if capacity is None else capacity
    segments_L = jnp.ones_like(ids_L) if segments_L is None else segments_L
    keep_L = jax.random.uniform(rng, (length,)) < keep_V[ids_L]
    slot_L = jnp.where(keep_L, jnp.cumsum(keep_L) - 1, capacity)  # >= capacity: dropped
    packed = jnp.zeros(capacity, ids_L.dtype).at[slot_L].set(ids_L, mode="drop")
    packed_segments = jnp.zeros(capacity, segments_L.dtype).at[slot_L].set(segments_L, mode="drop")
    kept = keep_L.sum()
    valid_M = jnp.arange(capacity) < kept
    return packed, valid_M, packed_segments, jnp.maximum(kept - capacity, 0)


def kept_capacity(keep_V: np.ndarray, counts_V: np.ndarray, length: int) -> int:
    """Slots for the survivors of a chunk of ``length`` tokens: the expected number kept
    (from the corpus counts) plus 10% and 6 binomial standard deviations, at most L."""
    freq = np.asarray(counts_V, np.float64) / max(np.sum(counts_V), 1)
    keep = np.asarray(keep_V, np.float64)
    mean = length * float(np.sum(freq * keep))
    std = np.sqrt(length * float(np.sum(freq * keep * (1 - keep))))
    return int(min(length, np.ceil(1.1 * mean + 6 * std + 8)))


def window_offsets(window: int) -> np.ndarray:
    """The C = 2 * window context offsets: -window..-1, 1..window."""
    return np.concatenate([np.arange(-window, 0), np.arange(1, window + 1)])


def dynamic_window(
    valid_L: Bool[Array, " L"],
    window: int,
    rng: PRNGKey,
    segments_L: Int[Array, " L"] | None = None,
) -> tuple[Bool[Array, "L C"], Int[Array, "L C"]]:
    """word2vec's dynamic window: (pair mask, context position) per center and offset.

    Each center draws its reach uniformly from 1..``window`` (the C code's
    ``b = rand % window``), so a context at distance d is used with probability
    (window - d + 1) / window. A pair needs both ends valid, inside the chunk and in the
    same segment. Offsets are ``window_offsets(window)``.
    """
    reach_L = window - jax.random.randint(rng, valid_L.shape, 0, window)
    return window_pairs(valid_L, reach_L, window, segments_L)


def window_pairs(
    valid_L: Bool[Array, " L"],
    reach_L: Int[Array, " L"],
    window: int,
    segments_L: Int[Array, " L"] | None = None,
) -> tuple[Bool[Array, "L C"], Int[Array, "L C"]]:
    """``dynamic_window`` with each center's reach (in 1..``window``) given."""
    length = valid_L.shape[0]
    segments_L = jnp.ones(length, jnp.int32) if segments_L is None else segments_L
    offsets_C = window_offsets(window)
    position_LC = jnp.arange(length)[:, None] + offsets_C[None, :]
    inside_LC = (position_LC >= 0) & (position_LC < length)
    position_LC = jnp.clip(position_LC, 0, length - 1)
    mask_LC = inside_LC & (np.abs(offsets_C)[None, :] <= reach_L[:, None])
    mask_LC &= valid_L[:, None] & valid_L[position_LC]
    mask_LC &= segments_L[position_LC] == segments_L[:, None]
    return mask_LC, position_LC


# -- negatives --------------------------------------------------------------------------


def alias_table(weights_V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table (Vose's construction) for drawing i with P ~ ``weights_V[i]``.

    Returns (accept_V float32, alias_V int32): draw a bucket i uniformly, keep it with
    probability ``accept_V[i]``, else take ``alias_V[i]``. O(1) per draw, whatever V is.
    Ids of weight 0 are never drawn.
    """
    weights = np.asarray(weights_V, np.float64)
    if weights.ndim != 1 or not np.all(np.isfinite(weights)) or weights.min() < 0:
        raise ValueError("alias_table needs a 1-D array of finite non-negative weights")
    if weights.sum() <= 0:
        raise ValueError("alias_table needs at least one positive weight")
    size = len(weights)
    scaled = weights * (size / weights.sum())
    accept, alias = np.ones(size), np.arange(size, dtype=np.int64)
    small = [i for i in range(size) if scaled[i] < 1.0]
    large = [i for i in range(size) if scaled[i] >= 1.0]
    while small and large:
        s, g = small.pop(), large[-1]
        accept[s], alias[s] = scaled[s], g
        scaled[g] -= 1.0 - scaled[s]
        if scaled[g] < 1.0:
            small.append(large.pop())
    # What is left holds (up to rounding) a full bucket: accept 1. A zero weight is never
    # accepted; one left over by rounding (its own alias) points at the heaviest id.
    zero = weights == 0
    accept[zero] = 0.0
    alias[zero & (alias == np.arange(size))] = int(np.argmax(weights))
    return accept.astype(np.float32), alias.astype(np.int32)


def negative_table(counts_V: np.ndarray, exponent: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
    """The alias table of word2vec's noise distribution, count^``exponent`` (0 stays 0)."""
    counts = np.asarray(counts_V, np.float64)
    return alias_table(np.clip(counts, 0.0, None) ** exponent)


def sample_negatives(
    rng: PRNGKey, accept_V: Float[Array, " V"], alias_V: Int[Array, " V"], shape: tuple
) -> Int[Array, "..."]:
    """Ids of ``shape`` drawn from an ``alias_table`` (two gathers per draw)."""
    bucket_key, coin_key = jax.random.split(rng)
    bucket = jax.random.randint(bucket_key, shape, 0, accept_V.shape[0])
    coin = jax.random.uniform(coin_key, shape)
    return jnp.where(coin < accept_V[bucket], bucket, alias_V[bucket]).astype(jnp.int32)


def negatives_from_bits(
    bits: Int[Array, "2 ..."], accept_V: Float[Array, " V"], alias_V: Int[Array, " V"]
) -> Int[Array, "..."]:
    """``sample_negatives`` from given random uint32 bits (``bits[0]`` picks the bucket,
    the top 24 bits of ``bits[1]`` the coin), for callers that draw all of a run's bits
    in one call (each ``jax.random`` call adds compilation time on XLA:CPU)."""
    bucket = (bits[0] % accept_V.shape[0]).astype(jnp.int32)
    coin = (bits[1] >> 8).astype(jnp.float32) * (1.0 / (1 << 24))
    return jnp.where(coin < accept_V[bucket], bucket, alias_V[bucket]).astype(jnp.int32)


def negative_shape(config: SGNSConfig, length: int) -> tuple[int, ...]:
    """Shape of the negative ids for a chunk of ``length``: (L, C, N), (L, N),
    (ceil(L / (2 * window)), N) or (D,)."""
    n = config.negatives
    return {
        "pair": (length, config.num_contexts, n),
        "center": (length, n),
        "block": (-(-length // config.num_contexts), n),
        "batch": (config.batch_negatives,),
    }[config.negative_sharing]


# -- losses over gathered rows ----------------------------------------------------------


def _shifted(rows_LE: Array, offsets_C: np.ndarray) -> list[Array]:
    """``rows_LE`` moved so that entry i holds row i + offset (zeros past the ends, which
    callers mask): static slices of one padded copy, which XLA fuses better than rolls."""
    reach, length = int(np.abs(offsets_C).max()), rows_LE.shape[0]
    padded = jnp.pad(rows_LE, ((reach, reach), (0, 0)))
    return [padded[reach + int(o) : reach + int(o) + length] for o in offsets_C]


def positive_scores(
    center_LE: Float[Array, "L E"], context_LE: Float[Array, "L E"], window: int
) -> Float[Array, "L C"]:
    """``center[i] . context[i + offset]`` for every position and window offset (zero
    past the chunk's ends; callers mask).

    Computed in blocks of b = 2 * window centers: block k's windows lie inside blocks
    k and k + 1 of the context rows shifted by ``window``, so one batched (b, E) x (E, 2b)
    matmul per block gives every score a block needs (twice the multiplications of the
    10 shifted dot products, in about half the time on XLA:CPU, whose fused reductions
    run far below its matmul speed).
    """
    length = center_LE.shape[0]
    block = 2 * window
    v_KBE, u_KQE = _blocked(center_LE, context_LE, window)
    blocks = v_KBE.shape[0]
    padded = blocks * block
    scores_KBQ = jnp.einsum("kbe,kqe->kbq", v_KBE, u_KQE)
    offsets_C = window_offsets(window)
    index_BC = np.arange(block)[:, None] + window + offsets_C[None, :]
    index = jnp.broadcast_to(index_BC, (blocks, block, len(offsets_C)))
    return jnp.take_along_axis(scores_KBQ, index, axis=2).reshape(padded, -1)[:length]


def _softplus_and_sigmoid(x: Array) -> tuple[Array, Array]:
    """(log(1 + e^x), 1 / (1 + e^-x)) from one exponential (stable for any x)."""
    e = jnp.exp(-jnp.abs(x))
    return jnp.maximum(x, 0.0) + jnp.log1p(e), jnp.where(x >= 0, 1.0, e) / (1.0 + e)


@jax.custom_vjp
def softplus(x: Array) -> Array:
    """log(1 + e^x), whose gradient (the sigmoid) reuses the forward's exponential: the
    transcendental functions of the negative scores cost as much as their matmuls on
    XLA:CPU otherwise."""
    return _softplus_and_sigmoid(x)[0]


def _softplus_fwd(x):
    value, slope = _softplus_and_sigmoid(x)
    return value, slope


def _softplus_bwd(slope, g):
    return (g * slope,)


softplus.defvjp(_softplus_fwd, _softplus_bwd)


def _negative_term(
    query_LE: Float[Array, "L E"], negatives: Array, sharing: str, weight: Array, count: int
) -> Array:
    """Sum of -log s(-u_n . q) over the negatives, each weighted as its positives demand.

    ``weight`` is the pair mask (L, C) for "pair" sharing, else the pairs per center (L,);
    ``count`` negatives per pair are wanted, so each of the D drawn counts count / D.
    With "block" sharing, negatives (K, N, E) serve K consecutive groups of ceil(L / K)
    centers.
    """
    scale = count / negatives.shape[-2]
    if sharing == "pair":  # negatives (L, C, N, E)
        scores_LCN = jnp.einsum("le,lcne->lcn", query_LE, negatives)
        return scale * jnp.sum(softplus(scores_LCN) * weight[..., None])
    if sharing == "center":  # negatives (L, N, E)
        scores_LN = jnp.einsum("le,lne->ln", query_LE, negatives)
    elif sharing == "block":  # negatives (K, N, E)
        length, groups = query_LE.shape[0], negatives.shape[0]
        size = -(-length // groups)
        padded = jnp.pad(query_LE, ((0, groups * size - length), (0, 0)))
        scores_KGN = jnp.einsum("kge,kne->kgn", padded.reshape(groups, size, -1), negatives)
        scores_LN = scores_KGN.reshape(groups * size, -1)[:length]
    else:  # "batch": negatives (D, E), one matmul
        scores_LN = query_LE @ negatives.T
    return scale * jnp.sum(softplus(scores_LN) * weight[:, None])


def skipgram_ns_loss(
    center_LE: Float[Array, "L E"],
    context_LE: Float[Array, "L E"],
    negatives: Float[Array, "..."],
    mask_LC: Bool[Array, "L C"],
    window: int,
    sharing: str = "center",
    num_negatives: int | None = None,
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Skip-gram NS summed over pairs: -log s(u_o . v_c) - sum_n log s(-u_n . v_c).

    Args:
      center_LE: ``center[ids]`` per chunk position (v_c).
      context_LE: ``context[ids]`` per chunk position (u_o of the positives).
      negatives: ``context[negative ids]``, (L, C, N, E), (L, N, E) or (N, E) by ``sharing``.
      mask_LC: the pairs (``dynamic_window``); offset k of center i is position
        i + ``window_offsets(window)[k]``. Or the same pairs in the block layout of
        ``window_pairs_blocked`` (cheaper to build; not with "pair" sharing).
      window: the largest window (C = 2 * window).
      sharing: see ``NEGATIVE_SHARING``; with "center"/"batch" a center's negative term
        counts once per pair it has, so the expected gradient is word2vec's.
      num_negatives: N of the objective (None: as many as drawn per pair or center);
        with D draws each negative term is weighted N / D.

    Returns:
      (loss summed over pairs, number of pairs). The gradient of the sum is word2vec's
      per-pair SGD step summed over the chunk.
    """
    positive = positive_loss(center_LE, context_LE, mask_LC, window)
    if mask_LC.ndim == 3:  # window_pairs_blocked's layout: pairs per center by block
        if sharing == "pair":
            raise ValueError("sharing='pair' needs the (L, C) pair mask")
        mask = mask_LC.astype(center_LE.dtype)
        weight = mask.sum(-1).reshape(-1)[: center_LE.shape[0]]
    else:
        mask = mask_LC.astype(center_LE.dtype)
        weight = mask if sharing == "pair" else mask.sum(1)
    count = negatives.shape[-2] if num_negatives is None else num_negatives
    return positive + _negative_term(center_LE, negatives, sharing, weight, count), mask.sum()


def cbow_ns_loss(
    center_LE: Float[Array, "L E"],
    context_LE: Float[Array, "L E"],
    negatives: Float[Array, "..."],
    mask_LC: Bool[Array, "L C"],
    window: int,
    sharing: str = "center",
    num_negatives: int | None = None,
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """CBOW NS: the mean of the window's ``center`` rows predicts the middle word.

    Same arguments as ``skipgram_ns_loss`` (``center_LE`` here are the input vectors of
    the window words, ``context_LE`` the output vectors of the predicted words). One
    example per position with at least one context. Autodiff gives each window word
    1/count of the gradient (the C code and gensim give each the full gradient).

    Returns:
      (loss summed over examples, number of examples).
    """
    mask = mask_LC.astype(center_LE.dtype)
    count_L = mask.sum(1)
    shifted = _shifted(center_LE, window_offsets(window))
    sum_LE = sum(m[:, None] * v_LE for m, v_LE in zip(mask.T, shifted, strict=True))
    hidden_LE = sum_LE / jnp.maximum(count_L, 1.0)[:, None]
    example_L = (count_L > 0).astype(center_LE.dtype)
    positive = jnp.sum(-jax.nn.log_sigmoid(jnp.sum(hidden_LE * context_LE, -1)) * example_L)
    count = negatives.shape[-2] if num_negatives is None else num_negatives
    negative = _negative_term(hidden_LE, negatives, sharing, example_L, count)
    return positive + negative, example_L.sum()


def skipgram_softmax_loss(
    center_LE: Float[Array, "L E"],
    context_VE: Float[Array, "V E"],
    ids_L: Int[Array, " L"],
    mask_LC: Bool[Array, "L C"],
    position_LC: Int[Array, "L C"],
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Full-softmax skip-gram, -log p(o | c) with p = softmax(U v_c): the textbook baseline.

    Reads the whole ``context`` table (a dense (L, V) score matrix): small vocabularies only.
    Returns (loss summed over pairs, number of pairs).
    """
    logp_LV = jax.nn.log_softmax(center_LE @ context_VE.T, axis=-1)
    logp_LC = jnp.take_along_axis(logp_LV, ids_L[position_LC], axis=1)
    mask = mask_LC.astype(center_LE.dtype)
    return -jnp.sum(logp_LC * mask), mask.sum()


# -- sparse updates ---------------------------------------------------------------------


def sparse_sgd(
    table_VE: Float[Array, "V E"], ids: Int[Array, "..."], grads: Float[Array, "... E"], lr
) -> Float[Array, "V E"]:
    """``table[ids] -= lr * grads`` with duplicate ids summed (word2vec's SGD, batched)."""
    width = table_VE.shape[-1]
    update = (-lr * grads).reshape(-1, width).astype(table_VE.dtype)
    return table_VE.at[ids.reshape(-1)].add(update)


def row_uses(
    mask_LC: Bool[Array, "L C"],
    window: int,
    negatives_shape: tuple[int, ...],
    sharing: str,
    num_negatives: int,
) -> tuple[Array, Array, Array]:
    """How many pair terms of the skip-gram loss read each gathered row.

    Returns (center (L,), context positives (L,), negatives ``negatives_shape``): a
    center's row is in 1 + N terms per pair, a context position's row in one term per
    pair it is the context of, a drawn negative in the terms of the centers sharing it
    (weighted N / draws for "batch"). ``sparse_sgd_capped`` bounds a row's step by them.
    """
    mask = mask_LC.astype(jnp.float32)
    pairs_L = mask.sum(1)
    length = mask.shape[0]
    padded = jnp.pad(mask, ((window, window), (0, 0)))
    # position j is the context of center j - offset at the offset's column
    context_L = sum(
        padded[window - int(o) : window - int(o) + length, k]
        for k, o in enumerate(window_offsets(window))
    )
    if sharing == "pair":
        negative = jnp.broadcast_to(mask[..., None], negatives_shape)
    elif sharing == "center":
        negative = jnp.broadcast_to(pairs_L[:, None], negatives_shape)
    elif sharing == "block":
        groups = negatives_shape[0]
        size = -(-length // groups)
        per_group = jnp.pad(pairs_L, (0, groups * size - length)).reshape(groups, size).sum(1)
        negative = jnp.broadcast_to(per_group[:, None], negatives_shape)
    else:
        draws = negatives_shape[0]
        negative = jnp.full(negatives_shape, pairs_L.sum() * num_negatives / draws)
    return pairs_L * (1 + num_negatives), context_L, negative


def sparse_sgd_capped(
    table_VE: Float[Array, "V E"],
    scratch_V: Float[Array, " V"],
    ids: Int[Array, "..."],
    grads: Float[Array, "... E"],
    uses: Float[Array, "..."],
    lr,
    cap: float,
) -> tuple[Float[Array, "V E"], Float[Array, " V"]]:
    """``sparse_sgd`` with each row's summed step scaled by min(1, cap / its uses).

    A row read by at most ``cap`` pair terms in the batch takes word2vec's summed step;
    a row read more often (a frequent word, a shared negative) takes the mean step times
    ``cap``, which bounds what a batch adds up for it. ``scratch_V`` is an all-zero (V,)
    buffer that totals the uses per row and is zeroed again (returned for reuse), so
    nothing vocabulary-sized is computed.
    """
    width = table_VE.shape[-1]
    flat_ids, flat_uses = ids.reshape(-1), uses.reshape(-1).astype(scratch_V.dtype)
    totals = scratch_V.at[flat_ids].add(flat_uses)
    scale = jnp.minimum(1.0, cap / jnp.maximum(totals[flat_ids], 1e-6))
    step = (-lr * scale[:, None] * grads.reshape(-1, width)).astype(table_VE.dtype)
    return table_VE.at[flat_ids].add(step), totals.at[flat_ids].set(0.0)


def sparse_adagrad(
    table_VE: Float[Array, "V E"],
    accum_V: Float[Array, " V"],
    ids: Int[Array, "..."],
    grads: Float[Array, "... E"],
    lr,
    eps: float = 1e-8,
) -> tuple[Float[Array, "V E"], Float[Array, " V"]]:
    """Row-wise Adagrad on the touched rows: one accumulator per row.

    Each occurrence adds the mean square of its gradient to its row's accumulator (as if
    it were its own Adagrad step), then every occurrence's gradient is applied with
    ``lr / sqrt(accum[row] + eps)`` of the updated accumulator. A word seen k times in a
    batch moves about sqrt(k) normalised steps rather than the k of summed SGD, which is
    what keeps word2vec's batched updates of frequent words from diverging. Two scatters
    and a gather: nothing vocabulary-sized is computed.
    """
    width = table_VE.shape[-1]
    flat_ids, flat_grads = ids.reshape(-1), grads.reshape(-1, width)
    accum_V = accum_V.at[flat_ids].add(jnp.mean(flat_grads**2, -1).astype(accum_V.dtype))
    scale = lr / jnp.sqrt(accum_V[flat_ids] + eps)
    table_VE = table_VE.at[flat_ids].add((-scale[:, None] * flat_grads).astype(table_VE.dtype))
    return table_VE, accum_V


def linear_lr(total_steps: int, start: float = 0.025, end: float = 1e-4) -> optax.Schedule:
    """word2vec's learning rate: linear from ``start`` to ``end`` over the run."""
    return optax.linear_schedule(start, end, max(int(total_steps), 1))


# -- the positive term with a hand-written gradient ---------------------------------------


def _blocked(center_LE: Array, context_LE: Array, window: int) -> tuple[Array, Array]:
    """(v (K, b, E), u (K, 2b, E)): block k of b = 2 * window centers and the 2b context
    rows its windows can reach (rows k * b - window .. k * b + b + window - 1 and b - 2 *
    window more), as in ``positive_scores``."""
    blocks = -(-center_LE.shape[0] // (2 * window))
    return _blocked_rows(center_LE, window, blocks)[0], _blocked_rows(context_LE, window, blocks)[1]


def _unblocked_context(du_KQE: Array, length: int, window: int) -> Array:
    """The gradient of ``_blocked``'s u (K, 2b, E) folded back onto the L context rows."""
    blocks, width = du_KQE.shape[0], du_KQE.shape[-1]
    block = 2 * window
    padded = blocks * block
    first = du_KQE[:, :block].reshape(padded, width)
    second = du_KQE[:, block:].reshape(padded, width)
    du_PE = jnp.pad(first, ((0, block), (0, 0))) + jnp.pad(second, ((block, 0), (0, 0)))
    return du_PE[window : window + length]


def _blocked_mask(mask_LC: Array, window: int) -> Array:
    """The pair mask (L, C) laid out as the block scores (K, b, 2b), zero elsewhere."""
    length = mask_LC.shape[0]
    block, count = 2 * window, mask_LC.shape[1]
    blocks = -(-length // block)
    padded = jnp.pad(mask_LC, ((0, blocks * block - length), (0, 1)))  # column C: always 0
    # score (b, q) of a block is offset q - window - b; its column, or C when none
    offset_BQ = np.arange(2 * block)[None, :] - window - np.arange(block)[:, None]
    column = {int(o): c for c, o in enumerate(window_offsets(window))}
    index_BQ = np.vectorize(lambda o: column.get(int(o), count))(offset_BQ)
    blocked = padded.reshape(blocks, block, count + 1)
    return jnp.take_along_axis(blocked, jnp.broadcast_to(index_BQ, (blocks, block, 2 * block)), 2)


def _blocked_rows(x_L: Array, window: int, blocks: int) -> tuple[Array, Array]:
    """A per-position array (L, ...) as the centers (K, b, ...) and context positions
    (K, 2b, ...) of ``_blocked`` (zero past the ends)."""
    block, length = 2 * window, x_L.shape[0]
    padded = blocks * block
    tail = ((0, 0),) * (x_L.ndim - 1)
    centers = jnp.pad(x_L, ((0, padded - length), *tail)).reshape(blocks, block, *x_L.shape[1:])
    around = jnp.pad(x_L, ((window, padded - length + block - window), *tail))
    contexts = jnp.concatenate(
        [
            around[:padded].reshape(blocks, block, *x_L.shape[1:]),
            around[block : padded + block].reshape(blocks, block, *x_L.shape[1:]),
        ],
        axis=1,
    )
    return centers, contexts


def window_pairs_blocked(
    valid_L: Bool[Array, " L"],
    reach_L: Int[Array, " L"],
    window: int,
    segments_L: Int[Array, " L"] | None = None,
) -> Bool[Array, "K b Q"]:
    """``window_pairs``'s mask laid out as the block scores of ``positive_loss``: block k
    of b = 2 * window centers against the Q = 2b context positions its windows reach
    (offset q - window - i for center i of the block). Elementwise on static slices,
    without the gathers of the (L, C) layout."""
    length = valid_L.shape[0]
    segments_L = jnp.ones(length, jnp.int32) if segments_L is None else segments_L
    blocks = -(-length // (2 * window))
    valid_c, valid_q = _blocked_rows(valid_L, window, blocks)
    reach_c, _ = _blocked_rows(reach_L, window, blocks)
    segment_c, segment_q = _blocked_rows(segments_L, window, blocks)
    offset_BQ = np.arange(4 * window)[None, :] - window - np.arange(2 * window)[:, None]
    distance_BQ = np.abs(offset_BQ)
    mask = (distance_BQ[None] >= 1) & (distance_BQ[None] <= reach_c[..., None])
    mask &= valid_c[..., None] & valid_q[:, None, :]
    return mask & (segment_c[..., None] == segment_q[:, None, :])


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _positive_loss(center_LE, context_LE, mask_KBQ, window):
    return _positive_fwd(center_LE, context_LE, mask_KBQ, window)[0]


def _positive_fwd(center_LE, context_LE, mask_KBQ, window):
    v_KBE, u_KQE = _blocked(center_LE, context_LE, window)
    mask_KBQ = mask_KBQ.astype(center_LE.dtype)
    scores_KBQ = jnp.einsum("kbe,kqe->kbq", v_KBE, u_KQE)
    value_KBQ, slope_KBQ = _softplus_and_sigmoid(-scores_KBQ)
    loss = jnp.sum(value_KBQ * mask_KBQ)  # -log s(x) = softplus(-x)
    coef_KBQ = -slope_KBQ * mask_KBQ  # its derivative, -s(-x), per pair
    return loss, (v_KBE, u_KQE, coef_KBQ, center_LE.shape[0])


def _positive_bwd(window, residuals, g):
    v_KBE, u_KQE, coef_KBQ, length = residuals
    coef_KBQ = coef_KBQ * g
    dv_KBE = jnp.einsum("kbq,kqe->kbe", coef_KBQ, u_KQE)
    # contracted over the block's centers with the coefficients transposed first: XLA:CPU
    # then runs it as the other two (a batched matmul without a transposed operand); it
    # ran the contraction over axis 1 of both as the step's slowest operation
    du_KQE = jnp.einsum("kqb,kbe->kqe", jnp.swapaxes(coef_KBQ, 1, 2), v_KBE)
    dv_LE = dv_KBE.reshape(-1, v_KBE.shape[-1])[:length]
    return dv_LE, _unblocked_context(du_KQE, length, window), None


_positive_loss.defvjp(_positive_fwd, _positive_bwd)


def positive_loss(
    center_LE: Float[Array, "L E"],
    context_LE: Float[Array, "L E"],
    mask_LC: Bool[Array, "L C"],
    window: int,
) -> Float[Array, ""]:
    """Sum over the pairs of -log s(u_o . v_c), with a hand-written gradient.

    The same number as masking ``positive_scores``, but its gradient is two batched
    matmuls on the block layout and static slices back onto the rows; autodiff of the
    score gather (``take_along_axis``) gives a scatter-add that XLA:CPU runs slowly.
    ``mask`` is the (L, C) pair mask or ``window_pairs_blocked``'s (K, b, 2b) one.
    """
    if mask_LC.ndim == 2:
        mask_LC = _blocked_mask(mask_LC, window)
    return _positive_loss(center_LE, context_LE, mask_LC, window)
