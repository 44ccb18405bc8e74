"""``parallel_corpus``: a TFDS builder for sentence-aligned source/target text files.

Line ``i`` of the source file translates line ``i`` of the target file. Examples are
``{source_lang: str, target_lang: str}``, the same shape as TFDS's translation datasets
(``wmt14_translate``, ``ted_hrlr_translate``), so one pipeline reads both. Named configs
read ``$NLPJAX_DATA_DIR`` (or checksummed downloads); ``parallel_files_config`` makes a
config for any user files.
"""

import dataclasses
from pathlib import Path

import tensorflow_datasets as tfds

from nlpjax.data import raw
from nlpjax.data.tfds_builders.common import TemporaryDirPrepare, files_digest, prepared_source

MULTI30K_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/"


@dataclasses.dataclass
class ParallelCorpusConfig(tfds.core.BuilderConfig):
    """Aligned files per split.

    Attributes:
      languages: (source, target) feature names, e.g. ("de", "en").
      splits: (split name, source file, target file) triples; for named configs the files
        are paths relative to ``$NLPJAX_DATA_DIR``, for user configs ordinary paths.
      base_url: canonical location of the named files (basename appended); '' for user files.
      md5s: (relative path, md5) pairs checked on download.
      errors: ``strict`` or ``replace`` for non-UTF-8 bytes.
    """

    languages: tuple[str, str] = ("source", "target")
    splits: tuple[tuple[str, str, str], ...] = ()
    base_url: str = ""
    md5s: tuple[tuple[str, str], ...] = ()
    errors: str = "strict"


MULTI30K_DE_EN = ParallelCorpusConfig(
    name="multi30k_de_en",
    description="Multi30k task 1, German-English, raw: 29,000 / 1,014 / 1,000 pairs.",
    languages=("de", "en"),
    splits=(
        ("train", "multi30k/train.de.gz", "multi30k/train.en.gz"),
        ("validation", "multi30k/val.de.gz", "multi30k/val.en.gz"),
        ("test_2016", "multi30k/test_2016_flickr.de.gz", "multi30k/test_2016_flickr.en.gz"),
    ),
    base_url=MULTI30K_URL,
    md5s=(
        ("multi30k/train.de.gz", "81ff90b99829c0cd4b1b587d394afd39"),
        ("multi30k/train.en.gz", "0065d13af80720a55ca8153d126e6627"),
        ("multi30k/val.de.gz", "6e0e229eb049e3fc99a1ef02fb2d5f91"),
        ("multi30k/val.en.gz", "2b69aa9253948ac9f67e94917272dd40"),
        ("multi30k/test_2016_flickr.de.gz", "efd67d314d98489b716b145475101932"),
        ("multi30k/test_2016_flickr.en.gz", "ff2c0fcb4893a13bd73414306bc250ae"),
    ),
)

NAMED_CONFIGS = {c.name: c for c in [MULTI30K_DE_EN]}


def parallel_files_config(
    splits: dict[str, tuple[str, str]],
    languages: tuple[str, str] = ("source", "target"),
    errors: str = "strict",
) -> ParallelCorpusConfig:
    """A config for user files ``{split: (source_file, target_file)}``, named by a hash of
    their paths and contents (``files_digest``)."""
    files = {split: [_existing(Path(p)) for p in pair] for split, pair in splits.items()}
    digest = files_digest({"languages": list(languages), "errors": errors}, files)
    return ParallelCorpusConfig(
        name=f"files_{digest}",
        description=f"user parallel files: {splits}",
        languages=tuple(languages),
        splits=tuple((s, src, tgt) for s, (src, tgt) in splits.items()),
        errors=errors,
    )


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise raw.DataError(f"parallel corpus file not found: {path}")
    return path


def read_aligned(source: Path, target: Path, errors: str = "strict") -> list[tuple[str, str]]:
    """The line pairs of two aligned files; different line counts are a DataError."""
    sides = []
    for path in (source, target):
        text = raw.read_text(path, errors=errors)
        lines = text[:-1].split("\n") if text.endswith("\n") else text.split("\n")
        sides.append([line.rstrip("\r") for line in lines])
    if len(sides[0]) != len(sides[1]):
        raise raw.DataError(
            f"parallel files have different line counts: {source} has {len(sides[0])} lines, "
            f"{target} has {len(sides[1])}; line i of one must translate line i of the other"
        )
    return list(zip(*sides, strict=True))


class ParallelCorpus(TemporaryDirPrepare, tfds.core.GeneratorBasedBuilder):
    """Sentence-aligned corpora; each example is {source_lang: text, target_lang: text}."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = list(NAMED_CONFIGS.values())

    def _info(self) -> tfds.core.DatasetInfo:
        langs = self.builder_config.languages
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.builder_config.description,
            features=tfds.features.FeaturesDict({lang: tfds.features.Text() for lang in langs}),
            supervised_keys=tuple(langs),
            disable_shuffling=True,  # keep line order
        )

    def _resolve(self, path: str) -> Path:
        cfg = self.builder_config
        if not cfg.base_url:
            return _existing(Path(path))
        md5 = dict(cfg.md5s).get(path, "")
        local = raw.locate(path, cfg.base_url + Path(path).name, md5)
        own_use = "set data.dataset='parallel:SOURCE_FILE,TARGET_FILE;validation=SRC,TGT'"
        raw.check_canonical(local, md5, f"{cfg.name} file {path}", own_use)
        return local

    def source_files(self) -> list[Path]:
        """A named corpus's raw files that exist now (their digests are recorded and checked);
        none for user files, whose config name already holds their content digests."""
        cfg = self.builder_config
        if not cfg.base_url:
            return []
        paths = [raw.data_dir() / p for _, src, tgt in cfg.splits for p in (src, tgt)]
        return [p for p in paths if p.is_file()]

    def _split_generators(self, dl_manager):
        cfg = self.builder_config
        return {
            split: self._generate_examples(self._resolve(src), self._resolve(tgt))
            for split, src, tgt in cfg.splits
        }

    def _generate_examples(self, source: Path, target: Path):
        src_lang, tgt_lang = self.builder_config.languages
        for i, (src, tgt) in enumerate(read_aligned(source, target, self.builder_config.errors)):
            yield i, {src_lang: src, tgt_lang: tgt}


BUILDERS = {"parallel_corpus": ParallelCorpus}


def load_pairs(name: str, split: str, data_dir: str = "") -> list[tuple[str, str]]:
    """Prepares (once) and reads a split of ``parallel_corpus/<name>`` as (source, target)."""
    if name not in NAMED_CONFIGS:
        raise raw.DataError(f"unknown parallel corpus {name!r}; known: {', '.join(NAMED_CONFIGS)}")
    config = NAMED_CONFIGS[name]
    source = prepared_source(ParallelCorpus, config, split, data_dir)
    src, tgt = config.languages
    rows = (source[i] for i in range(len(source)))
    return [(r[src].decode("utf-8"), r[tgt].decode("utf-8")) for r in rows]
