"""Labelled text for classifiers: ``label<TAB>text`` files, one example per line.

A dataset spec ``labelled:TRAIN[,TRAIN...]`` with options ``;validation=FILES``,
``;test=FILES``, ``;labels=a,b,c`` and ``;errors=strict|replace`` (see ``sources.py``)
opens through this module. Blank lines are skipped; a line without a TAB, with an empty
label or empty text, or with a label outside the label set is an error naming the file and
line. The label set is ``labels=`` when given (its order is the class ids), else the
sorted labels of the training files; validation and test labels must belong to it.
Classification corpora are small, so the files are read into memory (no TFDS build).
"""

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from nlpjax.data import raw
from nlpjax.errors import DataError

FIELDS = ("text", "label")
OVERFLOW = ("error", "truncate")  # what an example longer than the maximum length does
log = logging.getLogger(__name__)


def parse_lines(
    text: str, path: Path | str, labels: Sequence[str] | None = None
) -> list[dict[str, str]]:
    """The examples of one file's text; ``labels`` (if given) is the allowed label set."""
    known = None if labels is None else set(labels)
    examples = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        label, tab, body = line.partition("\t")
        label, body = label.strip(), body.strip()
        where = f"{path}:{lineno}"
        if not tab:
            raise DataError(f"{where}: no TAB in {line[:40]!r}; write each line as label<TAB>text")
        if not label:
            raise DataError(f"{where}: missing label before the TAB; write label<TAB>text")
        if not body:
            raise DataError(f"{where}: label {label!r} has no text after the TAB")
        if known is not None and label not in known:
            raise DataError(
                f"{where}: unknown label {label!r}; the labels are {sorted(known)} "
                "(list every label in the dataset option ;labels=a,b,... or fix the line)"
            )
        examples.append({"text": body, "label": label})
    return examples


def read_files(
    patterns: Sequence[str], labels: Sequence[str] | None = None, errors: str = "strict"
) -> list[dict[str, str]]:
    """Every example of the files named by ``patterns`` (files, directories of .tsv, globs)."""
    examples = []
    for path in raw.expand_paths(patterns, suffix=".tsv"):
        examples += parse_lines(raw.read_text(path, errors=errors, allow_empty=True), path, labels)
    if not examples:
        raise DataError(f"no labelled examples in {list(patterns)}: write label<TAB>text lines")
    return examples


def label_set(train: Sequence[dict[str, str]], declared: Sequence[str] = ()) -> tuple[str, ...]:
    """The class names in id order: ``declared`` as given, else the training labels sorted."""
    if declared:
        duplicates = sorted({x for x in declared if list(declared).count(x) > 1})
        if duplicates:
            raise DataError(f"labels= lists {duplicates} more than once")
        return tuple(declared)
    return tuple(sorted({ex["label"] for ex in train}))


def open_split(
    splits: dict[str, Sequence[str]], split: str, declared: Sequence[str] = (), errors="strict"
) -> tuple[list[dict[str, str]], tuple[str, ...]]:
    """(examples of ``split``, the label set) for file patterns per split.

    Raises:
      DataError: the split has no files, or a line is malformed or has an unknown label.
    """
    if not splits.get(split):
        given = [s for s, p in splits.items() if p]
        raise DataError(
            f"labelled dataset has no {split!r} split (it has {given}); add ;{split}=FILES"
        )
    train = read_files(splits["train"], declared or None, errors)
    labels = label_set(train, declared)
    if split == "train":
        return train, labels
    return read_files(splits[split], labels, errors), labels


def label_ids(examples: Sequence[dict[str, str]], labels: Sequence[str]) -> list[int]:
    """Class id of each example (its label's index in ``labels``)."""
    index = {name: i for i, name in enumerate(labels)}
    return [index[ex["label"]] for ex in examples]


def classification_arrays(
    examples: Sequence[dict[str, str]],
    encode: Callable[[str], np.ndarray],
    labels: Sequence[str],
    max_length: int,
    overflow: str = "error",
    where: str = "",
) -> tuple[dict[str, np.ndarray], int]:
    """Right-padded token ids, masks and class ids of labelled examples.

    Args:
      examples: ``{text, label}`` items.
      encode: text -> token ids.
      labels: the label set (class id = index).
      max_length: the longest input kept (``data.max_length``).
      overflow: ``error`` (a longer example is a DataError naming it) or ``truncate``
        (keep its first ``max_length`` tokens; the count is logged and returned).
      where: names the data in messages (the split).

    Returns:
      ({"inputs": (N, max_length) int32, "inputs_mask": bool, "labels": (N,) int32},
      number of truncated examples).
    """
    if overflow not in OVERFLOW:
        raise DataError(f"data.overflow must be one of {OVERFLOW}, got {overflow!r}")
    n = len(examples)
    inputs = np.zeros((n, max_length), np.int32)  # 0 is <pad>
    mask = np.zeros((n, max_length), bool)
    truncated = 0
    for i, example in enumerate(examples):
        ids = np.asarray(encode(example["text"]), np.int32)
        if len(ids) > max_length:
            if overflow == "error":
                raise DataError(
                    f"{where} example {i} ({example['text'][:40]!r}) has {len(ids)} tokens, "
                    f"more than data.max_length={max_length}; raise data.max_length or set "
                    "data.overflow='truncate'"
                )
            ids, truncated = ids[:max_length], truncated + 1
        inputs[i, : len(ids)], mask[i, : len(ids)] = ids, True
    if truncated:
        log.warning(
            "%s: truncated %d of %d examples to data.max_length=%d tokens",
            where, truncated, n, max_length,
        )  # fmt: skip
    return {
        "inputs": inputs,
        "inputs_mask": mask,
        "labels": np.array(label_ids(examples, labels), np.int32),
    }, truncated
