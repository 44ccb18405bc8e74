"""Speaker classification from Tiny Shakespeare: which of the most frequent speakers says a line.

Tiny Shakespeare is a sequence of speeches, each a ``NAME:`` line followed by the spoken
lines, separated by blank lines. The ``top`` speakers with the most spoken lines are the
classes; every spoken line of theirs is one ``speaker<TAB>line`` example. Whole speeches go
to one split (speech 8 of every 10 to validation, speech 9 to test, the rest to train), so
no speech is cut across splits. ``python -m nlpjax.data.shakespeare_speakers OUT_DIR`` writes
``train.tsv``, ``validation.tsv`` and ``test.tsv`` for the ``labelled:`` dataset spec.
"""

import argparse
import collections
from pathlib import Path

from nlpjax.data import raw
from nlpjax.data.tfds_builders.text_corpus import TINY_SHAKESPEARE
from nlpjax.errors import DataError

SPLITS = ("train", "validation", "test")


def speeches(text: str) -> list[tuple[str, list[str]]]:
    """(speaker, spoken lines) of every block ``NAME:`` + lines, in order."""
    found = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        lines = [line for line in block.strip("\n").split("\n") if line.strip()]
        if len(lines) >= 2 and lines[0].endswith(":"):
            found.append((lines[0][:-1].strip(), [line.strip() for line in lines[1:]]))
    return found


def top_speakers(all_speeches: list[tuple[str, list[str]]], top: int) -> tuple[str, ...]:
    """The ``top`` speakers by number of spoken lines (ties broken by name)."""
    counts = collections.Counter()
    for speaker, lines in all_speeches:
        counts[speaker] += len(lines)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return tuple(name for name, _ in ranked[:top])


def split_examples(text: str, top: int = 5) -> dict[str, list[tuple[str, str]]]:
    """{split: [(speaker, line), ...]} for the ``top`` most frequent speakers."""
    all_speeches = speeches(text)
    if not all_speeches:
        raise DataError("no 'NAME:' speeches found: is this the Tiny Shakespeare file?")
    keep = set(top_speakers(all_speeches, top))
    out = {split: [] for split in SPLITS}
    kept = [(speaker, lines) for speaker, lines in all_speeches if speaker in keep]
    for i, (speaker, lines) in enumerate(kept):
        split = {8: "validation", 9: "test"}.get(i % 10, "train")
        out[split] += [(speaker, line) for line in lines]
    return out


def write_splits(out_dir: Path, text: str, top: int = 5) -> dict[str, Path]:
    """Writes ``{split}.tsv`` files (``speaker<TAB>line``) and returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, examples in split_examples(text, top).items():
        paths[split] = out_dir / f"{split}.tsv"
        paths[split].write_text("".join(f"{label}\t{line}\n" for label, line in examples))
    return paths


def spec(paths: dict[str, Path]) -> str:
    """The ``labelled:`` dataset spec of the written splits."""
    return f"labelled:{paths['train']};validation={paths['validation']};test={paths['test']}"


def ensure_splits(out_dir: Path | str, top: int = 5) -> str:
    """The dataset spec of ``out_dir``'s split files, written first if any is missing
    (from the Tiny Shakespeare file, found as ``nlpjax.data.raw.locate`` does)."""
    out_dir = Path(out_dir)
    paths = {split: out_dir / f"{split}.tsv" for split in SPLITS}
    if not all(p.is_file() for p in paths.values()):
        path = raw.locate(TINY_SHAKESPEARE.relpath, TINY_SHAKESPEARE.url, TINY_SHAKESPEARE.md5)
        paths = write_splits(out_dir, raw.read_text(path), top)
    return spec(paths)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--top", type=int, default=5, help="number of speakers (classes)")
    args = parser.parse_args(argv)
    path = raw.locate(TINY_SHAKESPEARE.relpath, TINY_SHAKESPEARE.url, TINY_SHAKESPEARE.md5)
    paths = write_splits(Path(args.out_dir), raw.read_text(path), args.top)
    print(f"data.dataset = {spec(paths)!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
