"""Synthetic prompt/answer tasks that need computation, generated from a seed.

``addition:DIGITS`` (a dataset spec, see ``sources.py``) is multi-digit addition without
chain-of-thought: lines ``A+B=C`` with A and B drawn uniformly from [0, 10^DIGITS),
written with DIGITS digits each and C with DIGITS + 1 (zero-padded), so every line has
the same shape, e.g. ``042+517=0559`` for DIGITS=3. Read with ``data.answer_separator='='``
it is a prompt/answer task (exact match of C); read as text it is an LM stream. The
splits are a pure function of (DIGITS, sizes, seed): no file is written, and the
validation problems never occur in the training split.
"""

import dataclasses

import numpy as np

from nlpjax.errors import DataError

MAX_DIGITS = 9  # sums stay exact in int64 and lines short
SPLITS = ("train", "validation")


@dataclasses.dataclass(frozen=True)
class AdditionSpec:
    """``addition:DIGITS;train=N;validation=N;seed=S``."""

    digits: int
    train: int = 20000
    validation: int = 500
    seed: int = 0

    def __post_init__(self):
        if not 1 <= self.digits <= MAX_DIGITS:
            raise DataError(f"addition:{self.digits}: DIGITS must be 1..{MAX_DIGITS}")
        if self.train < 1 or self.validation < 1:
            raise DataError(f"addition: train={self.train} and validation=... must be >= 1")
        space = 10 ** (2 * self.digits)
        if self.train + self.validation > space // 2:
            raise DataError(
                f"addition:{self.digits} has {space:,} problems; train + validation = "
                f"{self.train + self.validation:,} must be at most half of them: use more "
                "digits or fewer examples"
            )


def parse_spec(digits: str, options: dict[str, str]) -> AdditionSpec:
    """An ``AdditionSpec`` from the spec's name and options (bad numbers name the key)."""
    values = {"digits": digits, **options}
    numbers = {}
    for key, value in values.items():
        if not value.isdigit():
            raise DataError(f"addition: {key} must be a whole number, got {value!r}")
        numbers[key] = int(value)
    return AdditionSpec(**numbers)


def _problems(rng: np.random.Generator, digits: int, count: int, taken: set) -> list[tuple]:
    """``count`` distinct (a, b) pairs not in ``taken`` (which they join)."""
    out = []
    high = 10**digits
    while len(out) < count:
        for a, b in rng.integers(0, high, size=(count - len(out), 2)).tolist():
            if (a, b) not in taken:
                taken.add((a, b))
                out.append((a, b))
    return out


def addition_lines(spec: AdditionSpec, split: str) -> list[str]:
    """The split's lines ``A+B=C`` (validation is drawn first, so it never changes with
    the training size and never overlaps the training split)."""
    if split not in SPLITS:
        raise DataError(f"addition: no split {split!r}; it has {', '.join(SPLITS)}")
    rng = np.random.default_rng([spec.seed, spec.digits])
    taken: set = set()
    validation = _problems(rng, spec.digits, spec.validation, taken)
    pairs = validation if split == "validation" else _problems(rng, spec.digits, spec.train, taken)
    d = spec.digits
    return [f"{a:0{d}d}+{b:0{d}d}={a + b:0{d + 1}d}" for a, b in pairs]
