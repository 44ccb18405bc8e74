"""Naming a dataset in a config: nlpjax's corpora, user files, or any registered TFDS dataset.

A dataset spec is one string (``data.dataset`` in a config):

- ``tiny_shakespeare`` or ``text_corpus/NAME``: a named text corpus;
- ``parallel_corpus/NAME``: a named parallel corpus (``multi30k_de_en``);
- ``files:PATTERN[,PATTERN...]`` with options ``;validation=PATTERN,...``,
  ``;split_by=file|line|paragraph``, ``;errors=strict|replace``: user text files,
  directories of ``.txt`` files or globs;
- ``parallel:SRC,TGT`` with options ``;validation=SRC,TGT``, ``;test=SRC,TGT``,
  ``;languages=de,en``, ``;errors=...``: user sentence-aligned files;
- ``labelled:FILES`` with options ``;validation=FILES``, ``;test=FILES``, ``;labels=a,b,c``,
  ``;errors=...``: ``label<TAB>text`` files for classifiers (items ``{text, label}``; see
  ``labelled.py``);
- ``addition:DIGITS`` with options ``;train=N``, ``;validation=N``, ``;seed=S``: synthetic
  multi-digit addition lines ``A+B=C`` generated in memory from the seed (``synthetic.py``);
- ``tfds:NAME[/CONFIG][:VERSION]``: a registered TFDS dataset (lm1b, wmt14_translate/de-en,
  c4/en, ...) already prepared as array_record in the TFDS data dir.

Every split opens as a random-access ``TextSource`` whose items are ``{field: str}``.
"""

import dataclasses
from collections.abc import Sequence

import tensorflow_datasets as tfds

from nlpjax.data import labelled, synthetic
from nlpjax.data.tfds_builders import parallel_corpus, text_corpus
from nlpjax.data.tfds_builders.common import prepared_source, tfds_data_dir
from nlpjax.errors import DataError

KINDS = ("text_corpus", "parallel_corpus", "files", "parallel", "labelled", "addition", "tfds")
_OPTIONS = {
    "files": ("validation", "split_by", "errors"),
    "parallel": ("validation", "test", "languages", "errors"),
    "labelled": ("validation", "test", "labels", "errors"),
    "addition": ("train", "validation", "seed"),
}
_PREFIXED = ("files", "parallel", "labelled", "addition", "tfds")


@dataclasses.dataclass(frozen=True)
class DatasetRef:
    """A parsed dataset spec: its kind, name (config name, patterns or TFDS name), options."""

    kind: str
    name: str
    options: tuple[tuple[str, str], ...] = ()

    def option(self, key: str, default: str = "") -> str:
        return dict(self.options).get(key, default)


def parse_dataset(spec: str) -> DatasetRef:
    """Parses a dataset spec (see the module docstring); errors list the valid forms."""
    head, *opts = spec.split(";")
    if ":" in head and head.split(":", 1)[0] in _PREFIXED:
        kind, name = head.split(":", 1)
    elif "/" in head and head.split("/", 1)[0] in ("text_corpus", "parallel_corpus"):
        kind, name = head.split("/", 1)
    elif "/" not in head and ":" not in head:
        kind, name = "text_corpus", head  # bare name: a named text corpus
    else:
        raise DataError(f"cannot parse dataset {spec!r}; use one of: {', '.join(KINDS)} forms")
    options = []
    for opt in opts:
        key, eq, value = opt.partition("=")
        if not eq or key not in _OPTIONS.get(kind, ()):
            allowed = ", ".join(_OPTIONS.get(kind, ())) or "none"
            raise DataError(f"dataset {spec!r}: bad option {opt!r} (options for {kind}: {allowed})")
        options.append((key, value))
    if not name:
        raise DataError(f"dataset {spec!r} names nothing")
    return DatasetRef(kind, name, tuple(options))


def _split_list(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


def _builder_and_config(ref: DatasetRef):
    """(builder class, builder config) of a spec served by an nlpjax builder."""
    if ref.kind == "text_corpus":
        configs = text_corpus.NAMED_CONFIGS
        if ref.name not in configs:
            raise DataError(f"unknown text corpus {ref.name!r}; known: {', '.join(configs)}")
        return text_corpus.TextCorpus, configs[ref.name]
    if ref.kind == "parallel_corpus":
        configs = parallel_corpus.NAMED_CONFIGS
        if ref.name not in configs:
            raise DataError(f"unknown parallel corpus {ref.name!r}; known: {', '.join(configs)}")
        return parallel_corpus.ParallelCorpus, configs[ref.name]
    if ref.kind == "files":
        config = text_corpus.files_config(
            _split_list(ref.name),
            _split_list(ref.option("validation")),
            split_by=ref.option("split_by", "file"),
            errors=ref.option("errors", "strict"),
        )
        return text_corpus.TextCorpus, config
    splits = {"train": ref.name, "validation": ref.option("validation"), "test": ref.option("test")}
    pairs = {}
    for split, value in splits.items():
        files = _split_list(value)
        if value and len(files) != 2:
            raise DataError(f"parallel {split} must be 'SOURCE_FILE,TARGET_FILE', got {value!r}")
        if files:
            pairs[split] = (files[0], files[1])
    languages = tuple(_split_list(ref.option("languages", "source,target")))
    if len(languages) != 2:
        raise DataError(f"languages must be two names like 'de,en', got {languages}")
    config = parallel_corpus.parallel_files_config(pairs, languages, ref.option("errors", "strict"))
    return parallel_corpus.ParallelCorpus, config


def _labelled(ref: DatasetRef, split: str) -> tuple[list[dict[str, str]], tuple[str, ...]]:
    """(examples, label set) of a ``labelled:`` spec's split (read into memory)."""
    splits = {"train": ref.name, "validation": ref.option("validation"), "test": ref.option("test")}
    patterns = {s: _split_list(v) for s, v in splits.items()}
    declared = _split_list(ref.option("labels"))
    return labelled.open_split(patterns, split, declared, ref.option("errors", "strict"))


def label_names(spec: str) -> tuple[str, ...]:
    """The class names of a ``labelled:`` spec in id order."""
    ref = parse_dataset(spec)
    if ref.kind != "labelled":
        raise DataError(f"dataset {spec!r} has no labels: use a labelled:FILES spec")
    return _labelled(ref, "train")[1]


def _addition(ref: DatasetRef, split: str) -> list[dict[str, str]]:
    spec = synthetic.parse_spec(ref.name, dict(ref.options))
    return [{"text": line} for line in synthetic.addition_lines(spec, split)]


def _tfds_source(ref: DatasetRef, split: str, data_dir: str):
    try:
        return tfds.data_source(ref.name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # not registered, not prepared, prepared as tfrecord only, ...
        raise DataError(
            f"cannot read TFDS dataset {ref.name!r} split {split!r} from {data_dir}: "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}\nPrepare it there as "
            f"array_record: tfds build {ref.name} --file_format=array_record "
            f"--data_dir={data_dir} (or set TFDS_DATA_DIR / data.tfds_data_dir)"
        ) from None


def raw_source(spec: str, split: str, data_dir: str = ""):
    """The random-access source of feature dicts behind ``split`` of ``spec``."""
    ref = parse_dataset(spec)
    if ref.kind == "tfds":
        return _tfds_source(ref, split, tfds_data_dir(data_dir))
    if ref.kind == "labelled":
        return _labelled(ref, split)[0]
    if ref.kind == "addition":
        return _addition(ref, split)
    builder_cls, config = _builder_and_config(ref)
    return prepared_source(builder_cls, config, split, data_dir)


def default_fields(spec: str, data_dir: str = "") -> tuple[str, ...]:
    """Text fields of a spec's examples: ("text",) or its (source, target) languages."""
    ref = parse_dataset(spec)
    if ref.kind in ("text_corpus", "files", "addition"):
        return ("text",)
    if ref.kind == "labelled":
        return labelled.FIELDS
    if ref.kind != "tfds":
        return tuple(_builder_and_config(ref)[1].languages)
    info = tfds.builder(ref.name, data_dir=tfds_data_dir(data_dir)).info
    keys = info.supervised_keys
    return tuple(keys) if keys else ("text",)


class TextSource(Sequence):
    """A random-access view of some text fields of a data source: item i -> {field: str}."""

    def __init__(self, source, fields: Sequence[str], name: str = ""):
        self._source, self.fields, self.name = source, tuple(fields), name
        if len(source) == 0:
            raise DataError(f"dataset {name!r} is empty")
        missing = [f for f in self.fields if f not in source[0]]
        if missing:
            raise DataError(f"dataset {name!r} has no field(s) {missing}; it has {list(source[0])}")

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, str]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} examples")
        row = self._source[index % len(self)]
        return {f: _text(row[f]) for f in self.fields}

    def read_all(self) -> list[dict[str, str]]:
        """Every example in order (``[self[i] for i in range(len(self))]``), read in one
        batched call when the source has one (TFDS's array_record sources decode a batch
        much faster than item by item)."""
        many = getattr(self._source, "__getitems__", None)
        indices = range(len(self))
        rows = many(list(indices)) if many is not None else (self._source[i] for i in indices)
        return [{f: _text(row[f]) for f in self.fields} for row in rows]


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if hasattr(value, "item"):  # numpy scalar / 0-d object array
        return _text(value.item())
    return str(value)


def open_text(
    spec: str, split: str, data_dir: str = "", fields: Sequence[str] | None = None
) -> TextSource:
    """Opens ``split`` of dataset ``spec`` as a ``TextSource`` of the given (or default) fields."""
    fields = tuple(fields) if fields else default_fields(spec, data_dir)
    return TextSource(raw_source(spec, split, data_dir), fields, f"{spec} [{split}]")


def load_documents(spec: str, split: str, data_dir: str = "", field: str = "text") -> list[str]:
    """Every document of a split as a list of strings (small corpora; pipelines stream)."""
    source = open_text(spec, split, data_dir, (field,))
    return [source[i][field] for i in range(len(source))]


def split_sizes(spec: str, data_dir: str = "") -> dict[str, int]:
    """Number of examples per split (prepares nlpjax corpora if needed)."""
    ref = parse_dataset(spec)
    if ref.kind == "labelled":
        splits = ("train", "validation", "test")
        return {s: len(_labelled(ref, s)[0]) for s in splits if ref.option(s) or s == "train"}
    if ref.kind == "addition":
        return {s: len(_addition(ref, s)) for s in synthetic.SPLITS}
    if ref.kind == "tfds":
        builder = tfds.builder(ref.name, data_dir=tfds_data_dir(data_dir))
    else:
        builder_cls, config = _builder_and_config(ref)
        raw_source(spec, "train", data_dir)  # prepares
        builder = builder_cls(config=config, data_dir=tfds_data_dir(data_dir))
    return {name: info.num_examples for name, info in builder.info.splits.items()}
