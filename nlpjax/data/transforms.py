"""Pure example transforms: T5 span corruption, pause tokens, word2vec skip-gram pairs.

- Span corruption follows T5 (https://arxiv.org/abs/1910.10683): noise spans are
  replaced by sentinels in the inputs, the targets list each dropped span after its
  sentinel, and both end with EOS.
- Pause tokens follow Goyal et al., "Think before you speak"
  (https://arxiv.org/abs/2310.02226).
- Skip-gram pairs follow word2vec (https://arxiv.org/abs/1310.4546) and its C code:
  dynamic window, frequent-word subsampling.

Every function is pure: randomness comes from the ``np.random.Generator`` argument.
"""

import numpy as np
from jaxtyping import Bool, Float, Int

# -- T5 span corruption -----------------------------------------------------------------


def span_corruption_lengths(
    inputs_length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> tuple[int, int]:
    """Raw tokens per example and targets length for corrupted inputs of ``inputs_length``.

    As T5's ``random_spans_helper``: the longest raw length whose inputs (non-noise
    tokens, one sentinel per span, EOS) fit in ``inputs_length``; 512 -> (568, 114).
    """

    def lengths(tokens_length: int) -> tuple[int, int]:
        num_noise = int(round(tokens_length * noise_density))
        num_spans = int(round(num_noise / mean_noise_span_length))
        return tokens_length - num_noise + num_spans + 1, num_noise + num_spans + 1

    tokens_length = inputs_length - 1
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    return tokens_length, lengths(tokens_length)[1]


def random_segmentation(
    num_items: int, num_segments: int, rng: np.random.Generator
) -> Int[np.ndarray, " num_segments"]:
    """Lengths (each >= 1, summing to ``num_items``) of a uniformly random cut into segments."""
    cuts = np.sort(rng.choice(num_items - 1, num_segments - 1, replace=False) + 1)
    return np.diff(np.concatenate([[0], cuts, [num_items]])).astype(np.int32)


def random_spans_noise_mask(
    length: int,
    rng: np.random.Generator,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
) -> Bool[np.ndarray, " L"]:
    """T5's noise mask: round(length * density) noise tokens in round(that / mean) spans.

    Non-noise and noise spans alternate, starting with non-noise (so the sequence ends
    with a noise span); the span lengths are uniformly random compositions.
    """
    orig_length, length = length, max(length, 2)
    num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
    num_spans = min(num_spans, num_noise, length - num_noise)
    noise_lengths = random_segmentation(num_noise, num_spans, rng)
    nonnoise_lengths = random_segmentation(length - num_noise, num_spans, rng)
    interleaved = np.stack([nonnoise_lengths, noise_lengths], axis=1).reshape(-1)
    is_noise_span = np.tile([False, True], num_spans)
    return np.repeat(is_noise_span, interleaved)[:orig_length]


def noise_span_to_unique_sentinel(
    tokens: Int[np.ndarray, " L"],
    noise_mask: Bool[np.ndarray, " L"],
    sentinel_ids: Int[np.ndarray, " N"],
) -> Int[np.ndarray, " M"]:
    """Replaces the k-th noise span with ``sentinel_ids[k]`` (T5: k-th span -> <extra_id_k>)."""
    prev_noise = np.concatenate([[False], noise_mask[:-1]])
    first_noise = noise_mask & ~prev_noise
    span_index = np.cumsum(first_noise) - 1
    num_spans = int(first_noise.sum())
    if num_spans > len(sentinel_ids):
        raise ValueError(f"{num_spans} noise spans but only {len(sentinel_ids)} sentinel ids")
    sentinels = np.asarray(sentinel_ids, tokens.dtype)[np.maximum(span_index, 0)]
    out = np.where(first_noise, sentinels, tokens)
    return out[~(noise_mask & prev_noise)]


def span_corruption(
    tokens: Int[np.ndarray, " L"],
    noise_mask: Bool[np.ndarray, " L"],
    sentinel_ids: Int[np.ndarray, " N"],
    eos_id: int,
) -> tuple[Int[np.ndarray, " S"], Int[np.ndarray, " T"]]:
    """(inputs, targets) in T5's format, both ending with EOS.

    "Thank you for inviting me to your party last week." with noise "for inviting" and
    "last" gives inputs "Thank you <extra_id_0> me to your party <extra_id_1> week."
    and targets "<extra_id_0> for inviting <extra_id_1> last <extra_id_2>".
    """
    eos = np.asarray([eos_id], tokens.dtype)
    inputs = noise_span_to_unique_sentinel(tokens, noise_mask, sentinel_ids)
    targets = noise_span_to_unique_sentinel(tokens, ~noise_mask, sentinel_ids)
    return np.concatenate([inputs, eos]), np.concatenate([targets, eos])


# -- pause tokens -----------------------------------------------------------------------


def insert_pauses(
    tokens: Int[np.ndarray, " L"],
    num_pauses: int,
    pause_id: int,
    rng: np.random.Generator,
    segment_ids: Int[np.ndarray, " L"] | None = None,
) -> tuple[Int[np.ndarray, " L"], Int[np.ndarray, " L"]]:
    """Pretraining: ``num_pauses`` pauses at uniformly random positions, trimmed back to L.

    Only the non-padding prefix (``segment_ids > 0``) receives pauses; a pause joins the
    segment of the token after it. Returns (tokens, segment_ids), both of length L.
    """
    segment_ids = np.ones_like(tokens) if segment_ids is None else segment_ids
    n_real = int((segment_ids > 0).sum())
    if num_pauses <= 0 or n_real == 0:
        return tokens.copy(), segment_ids.copy()
    slots = n_real + num_pauses
    is_pause = np.zeros(slots, bool)
    is_pause[rng.choice(slots, num_pauses, replace=False)] = True
    source = np.minimum(np.cumsum(~is_pause) - ~is_pause, n_real - 1)[:n_real]
    is_pause = is_pause[:n_real]
    new_tokens, new_segments = tokens.copy(), segment_ids.copy()
    new_tokens[:n_real] = np.where(is_pause, pause_id, tokens[source])
    new_segments[:n_real] = segment_ids[source]
    return new_tokens, new_segments


def pause_loss_weights(
    targets: Int[np.ndarray, "*B L"], pause_id: int, segment_ids: Int[np.ndarray, "*B L"] | None
) -> Float[np.ndarray, "*B L"]:
    """1 where a real token is the target, 0 on padding and wherever the target is a pause."""
    real = np.ones(targets.shape, bool) if segment_ids is None else segment_ids > 0
    return (real & (targets != pause_id)).astype(np.float32)


def append_pauses(
    prompt: Int[np.ndarray, " P"], num_pauses: int, pause_id: int
) -> Int[np.ndarray, " Q"]:
    """Finetuning and inference: the prompt followed by ``num_pauses`` pause tokens."""
    return np.concatenate([prompt, np.full(num_pauses, pause_id, prompt.dtype)])


def pause_finetune_example(
    prompt: Int[np.ndarray, " P"],
    answer: Int[np.ndarray, " A"],
    num_pauses: int,
    pause_id: int,
    eos_id: int,
) -> tuple[Int[np.ndarray, " L"], Float[np.ndarray, " L"]]:
    """(tokens, weights): prompt, pauses, answer, EOS; ``weights[i]`` weights predicting
    ``tokens[i]``: 1 on the answer and EOS only (no loss on the prompt or the pauses)."""
    prefix = append_pauses(prompt, num_pauses, pause_id)
    tokens = np.concatenate([prefix, answer, np.asarray([eos_id], prompt.dtype)])
    weights = np.zeros(len(tokens), np.float32)
    weights[len(prefix) :] = 1.0
    return tokens, weights


def pause_pretrain_window(
    window: Int[np.ndarray, " L"], num_pauses: int, pause_id: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """A training window with pauses: ``{"tokens": (L,), "weights": (L - 1,)}``.

    ``num_pauses`` pauses go in at uniformly random places and the result is trimmed back
    to L (``insert_pauses``); ``weights[i]`` weights predicting ``tokens[i + 1]`` and is 0
    exactly where that token is an inserted pause. The inserted positions are tracked
    themselves, so ``pause_id`` may be an ordinary token (the filler control, e.g. '.'):
    its genuine occurrences keep their loss.
    """
    marked, _ = insert_pauses(window, num_pauses, -1, rng)
    inserted = marked < 0
    tokens = np.where(inserted, pause_id, marked).astype(window.dtype)
    return {"tokens": tokens, "weights": (~inserted[1:]).astype(np.float32)}


def pause_answer_row(
    prompt: Int[np.ndarray, " P"],
    answer: Int[np.ndarray, " A"],
    num_pauses: int,
    pause_id: int,
    eos_id: int,
    length: int,
    pad_id: int = 0,
) -> dict[str, np.ndarray] | None:
    """One prompt/answer example as an LM row: ``{"tokens": (length,), "weights": (length-1,)}``.

    Prompt, ``num_pauses`` pauses, answer, EOS, then padding (``pause_finetune_example``);
    ``weights[i]`` weights predicting ``tokens[i + 1]``: 1 on the answer and its EOS only.
    Returns None when the example does not fit in ``length``.
    """
    tokens, weights = pause_finetune_example(prompt, answer, num_pauses, pause_id, eos_id)
    if len(tokens) > length:
        return None
    row = np.full(length, pad_id, np.int32)
    row[: len(tokens)] = tokens
    target_weights = np.zeros(length, np.float32)
    target_weights[: len(weights)] = weights
    return {"tokens": row, "weights": target_weights[1:]}


def segment_positions(segment_ids: Int[np.ndarray, "*B L"]) -> Int[np.ndarray, "*B L"]:
    """Position of each token within its run of equal segment ids (0 on padding)."""
    seg = np.asarray(segment_ids)
    length = seg.shape[-1]
    index = np.broadcast_to(np.arange(length), seg.shape)
    starts = np.concatenate([np.ones_like(seg[..., :1], bool), seg[..., 1:] != seg[..., :-1]], -1)
    start_index = np.maximum.accumulate(np.where(starts, index, 0), axis=-1)
    return np.where(seg > 0, index - start_index, 0).astype(np.int32)


# -- word2vec skip-gram -----------------------------------------------------------------


def keep_probabilities(counts: Int[np.ndarray, " V"], threshold: float) -> Float[np.ndarray, " V"]:
    """Frequent-word subsampling: P(keep w) = (sqrt(f/t) + 1) * t/f, f = count / total.

    The formula of the word2vec C code (and gensim); the paper's discard probability
    1 - sqrt(t/f) is its first-order form. ``threshold <= 0`` keeps everything;
    words with count 0 are never kept.
    """
    counts = np.asarray(counts, np.float64)
    if threshold <= 0:
        return (counts > 0).astype(np.float32)
    freq = counts / counts.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        keep = (np.sqrt(freq / threshold) + 1.0) * threshold / freq
    return np.where(counts > 0, np.minimum(keep, 1.0), 0.0).astype(np.float32)


def subsample(
    ids: Int[np.ndarray, " L"], keep_prob: Float[np.ndarray, " V"], rng: np.random.Generator
) -> Int[np.ndarray, " M"]:
    """The ids that survive subsampling (each kept with ``keep_prob[id]``), in order."""
    return ids[rng.random(len(ids)) < keep_prob[ids]]


def skipgram_pairs(
    ids: Int[np.ndarray, " L"],
    window: int,
    rng: np.random.Generator,
    segment_ids: Int[np.ndarray, " L"] | None = None,
) -> tuple[Int[np.ndarray, " P"], Int[np.ndarray, " P"]]:
    """(centers, contexts) with word2vec's dynamic window.

    Each center draws its own window uniformly from 1..``window`` (word2vec's
    ``b = rand % window``), so a context at distance d is used with probability
    (window - d + 1) / window. Pairs never cross segments (sentences/documents) and
    never include padding (segment id 0). Ordered by center, then offset.
    """
    length = len(ids)
    seg = np.ones(length, np.int32) if segment_ids is None else np.asarray(segment_ids)
    reach = window - rng.integers(0, window, size=length)
    offsets = np.concatenate([np.arange(-window, 0), np.arange(1, window + 1)])
    ctx = np.arange(length)[:, None] + offsets[None, :]
    inside = (ctx >= 0) & (ctx < length)
    ctx_c = np.clip(ctx, 0, max(length - 1, 0))
    valid = inside & (np.abs(offsets)[None, :] <= reach[:, None])
    valid &= (seg[ctx_c] == seg[:, None]) & (seg[:, None] > 0)
    rows, cols = np.nonzero(valid)
    return ids[rows].astype(np.int32), ids[ctx_c[rows, cols]].astype(np.int32)


def noise_distribution(
    counts: Int[np.ndarray, " V"], power: float = 0.75
) -> Float[np.ndarray, " V"]:
    """word2vec's negative-sampling distribution: count^0.75, normalized."""
    weights = np.asarray(counts, np.float64) ** power
    return (weights / weights.sum()).astype(np.float32)
