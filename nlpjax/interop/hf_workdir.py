"""``nlpjax import --from=hf-t5`` and ``nlpjax export --to=hf-t5``: a Hugging Face T5
directory <-> an nlpjax ``seq2seq`` workdir (config.json, tokenizer.json, a checkpoint).

An imported workdir holds a step-0 checkpoint of the converted parameters (a fresh
optimizer state), so ``nlpjax eval``/``generate`` read it, ``nlpjax train`` continues from
it, and ``train.init_from`` can start a finetuning run from it. The tokenizer is the
directory's ``spiece.model`` with the checkpoint's sentinels (``tokenizer_config.json``'s
``extra_ids``, else 100); a directory without one is refused (a workdir needs its tokenizer).
"""

import dataclasses
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from etils import epath

from nlpjax.config import CheckpointConfig, EvalConfig, OptimConfig, ParallelConfig, TrainConfig
from nlpjax.data.spm_tokenizer import SentencePieceTokenizer
from nlpjax.data.tokenizers import save_tokenizer
from nlpjax.errors import DataError
from nlpjax.interop import hf_t5
from nlpjax.models.t5 import T5Config
from nlpjax.tasks.common import TOKENIZER_FILE
from nlpjax.tasks.seq2seq import Seq2SeqDataConfig
from nlpjax.training.checkpoint import Checkpointer
from nlpjax.training.resume import CONFIG_FILE, record
from nlpjax.training.run import CHECKPOINT_DIR

_log = logging.getLogger(__name__)
DEFAULT_SENTINELS = 100  # T5's extra_ids
# model keys the checkpoint decides (import refuses overrides of them)
CHECKPOINT_KEYS = (
    "vocab_size",
    "d_model",
    "num_heads",
    "head_dim",
    "d_ff",
    "num_encoder_layers",
    "num_decoder_layers",
    "feed_forward",
    "relative_buckets",
    "relative_max_distance",
    "tie_embeddings",
    "norm_epsilon",
)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(
            f"{path} not found: give the directory a Hugging Face save_pretrained wrote "
            "(config.json and model.safetensors or pytorch_model.bin)"
        ) from None
    except ValueError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None


def _spm_model_type(model: bytes) -> str:
    try:
        from sentencepiece import sentencepiece_model_pb2

        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(model)
    except Exception:  # no protobuf runtime, or an unparsable proto: SentencePiece decides
        return "unigram"
    return "bpe" if proto.trainer_spec.model_type == 2 else "unigram"


def spm_path(directory: Path) -> Path:
    """``directory/spiece.model``; a ``DataError`` naming the fix when it is missing."""
    path = directory / hf_t5.SPM_FILE
    if not path.is_file():
        raise DataError(
            f"{path} not found: an nlpjax workdir needs the model's SentencePiece model; "
            "copy the checkpoint's spiece.model (from its tokenizer files) into "
            f"{directory} and import again"
        )
    return path


def hf_tokenizer(directory: Path, vocab_size: int) -> SentencePieceTokenizer:
    """The directory's ``spiece.model`` laid out for a ``vocab_size``-row model: sentinels
    at the top, the rows left over as registers."""
    path = spm_path(directory)
    model = path.read_bytes()
    tok_config = directory / hf_t5.TOKENIZER_CONFIG_FILE
    extra = DEFAULT_SENTINELS
    if tok_config.is_file():
        extra = int(_read_json(tok_config).get("extra_ids", DEFAULT_SENTINELS))
    pieces = SentencePieceTokenizer(model, num_registers=0, num_sentinels=0).num_pieces
    room = vocab_size - pieces - 2  # after <pause> and <sink>
    if room < 0:
        raise DataError(
            f"{path} has {pieces} pieces but the model only {vocab_size} rows: nlpjax needs "
            f"at least {pieces + 2}; is this the model's own spiece.model?"
        )
    sentinels = min(extra, room)
    if sentinels < extra:
        _log.warning("%s: room for only %d of its %d sentinels", directory, sentinels, extra)
    model_type = _spm_model_type(model)
    return SentencePieceTokenizer(model, pieces, model_type, room - sentinels, sentinels)


def layout_of(tokenizer, vocab_size: int) -> hf_t5.VocabLayout:
    if tokenizer is None:
        return hf_t5.VocabLayout(vocab_size)
    return hf_t5.VocabLayout(vocab_size, tokenizer.num_pieces, tokenizer.num_sentinels)


def imported_config_tree(model: T5Config, tokenizer) -> dict[str, Any]:
    """A whole ``seq2seq`` config tree around an imported model (defaults elsewhere)."""
    data = Seq2SeqDataConfig()
    if tokenizer is not None:
        spec = tokenizer.spec()
        data = dataclasses.replace(
            data,
            tokenizer=dataclasses.replace(
                data.tokenizer, **{k: v for k, v in spec.items() if k != "kind"}
            ),
        )
    tree = {
        "task": "seq2seq",
        "seed": 0,
        "model": dataclasses.asdict(model),
        "data": dataclasses.asdict(data),
    }
    sections = {
        "optim": OptimConfig,
        "train": TrainConfig,
        "eval": EvalConfig,
        "checkpoint": CheckpointConfig,
    }
    tree.update({name: dataclasses.asdict(cls()) for name, cls in sections.items()})
    tree["parallel"] = dataclasses.asdict(ParallelConfig(devices=1, mesh="data:1"))
    return tree


def _check_empty(workdir: epath.Path) -> None:
    taken = [name for name in (CONFIG_FILE, CHECKPOINT_DIR) if (workdir / name).exists()]
    if taken:
        raise DataError(
            f"--workdir={workdir} already holds {' and '.join(taken)}: import into a new "
            "(empty) workdir; nothing was changed"
        )


def import_hf_t5(
    directory: str | Path, workdir: str | epath.PathLike, overrides: Mapping[str, Any] = ()
) -> dict:
    """Converts the Hugging Face T5 in ``directory`` into a new workdir; returns a summary
    (``step``, ``num_params``, ``tokenizer``). ``overrides`` are config keys as for train
    (e.g. ``{"data.prefix": "translate English to German: "}``); the model's shape keys
    come from the checkpoint."""
    from nlpjax import api

    directory, workdir = Path(directory), epath.Path(workdir)
    if not directory.is_dir():
        raise DataError(f"{directory} is not a directory (a Hugging Face T5 checkpoint)")
    hf_config = _read_json(directory / hf_t5.CONFIG_FILE)
    _check_empty(workdir)
    spm_path(directory)  # before the weights are read
    tensors = hf_t5.read_hf_tensors(directory)
    model = hf_t5.t5_config_from_hf(
        hf_config, str(directory / hf_t5.CONFIG_FILE), untied_head=hf_t5.has_untied_head(tensors)
    )
    tokenizer = hf_tokenizer(directory, model.vocab_size)
    params = hf_t5.params_from_hf(tensors, model, layout_of(tokenizer, model.vocab_size), directory)
    config = api.load_config(imported_config_tree(model, tokenizer), dict(overrides))
    changed = [k for k in CHECKPOINT_KEYS if getattr(config.model, k) != getattr(model, k)]
    if changed:
        raise DataError(
            f"--config.model.{changed[0]}: the model's shape comes from {directory} "
            f"({', '.join(f'{k}={getattr(model, k)!r}' for k in changed)}); override only "
            "other keys (model.max_target_len, model.dropout, model.dtype, data.*, ...)"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    save_tokenizer(tokenizer, workdir / TOKENIZER_FILE)
    save_step0(config, workdir, params)
    return {"step": 0, "num_params": int(sum(np.size(x) for x in jax.tree.leaves(params)))}


def save_step0(config, workdir: epath.Path, params) -> None:
    """Writes ``config.json`` and a step-0 checkpoint holding ``params`` (fresh optimizer
    state, the data iterator at its start)."""
    from nlpjax import api

    run = api.build_run(config, workdir)
    abstract = run.state.params
    placed = jax.tree.map(lambda a, p: jax.numpy.asarray(p, a.dtype), abstract, params)
    state = run.state.replace(params=placed)
    ckpt = Checkpointer(workdir / CHECKPOINT_DIR, run.config.checkpoint)
    try:
        data_state = run.task.train_iterator().get_state()
        ckpt.save(0, state, data_state, run.task.model_signature())
    finally:
        ckpt.close()
    record(workdir, run.config, 0, None)


def export_hf_t5(workdir: str | epath.PathLike, out: str | Path, step: int | None = None) -> dict:
    """Writes the T5 of ``workdir`` (checkpoint ``step``, default the latest) as a Hugging
    Face directory: config.json, model.safetensors and, with a SentencePiece tokenizer,
    spiece.model and tokenizer_config.json. Returns a summary (``step``, ``files``)."""
    from nlpjax import api

    trained = api.load(workdir, step)
    if not isinstance(trained.config.model, T5Config):
        raise DataError(
            f"{workdir} holds a {trained.config.task!r} model, not a T5: export --to=hf-t5 "
            "writes seq2seq workdirs"
        )
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out} exists and is not empty: export into a new directory")
    out.mkdir(parents=True, exist_ok=True)
    model = trained.config.model
    tokenizer = trained.tokenizer
    spm = tokenizer if isinstance(tokenizer, SentencePieceTokenizer) else None
    params = jax.tree.map(np.asarray, trained.params)
    tensors = hf_t5.hf_from_params(params, model, layout_of(spm, model.vocab_size))
    files = [hf_t5.write_hf_tensors(out, tensors)]
    (out / hf_t5.CONFIG_FILE).write_text(json.dumps(hf_t5.hf_config_from_t5(model), indent=2))
    files.append(out / hf_t5.CONFIG_FILE)
    if spm is not None:
        (out / hf_t5.SPM_FILE).write_bytes(spm.model)
        tok_config = {"extra_ids": spm.num_sentinels, "model_max_length": 512}
        (out / hf_t5.TOKENIZER_CONFIG_FILE).write_text(json.dumps(tok_config, indent=2))
        files += [out / hf_t5.SPM_FILE, out / hf_t5.TOKENIZER_CONFIG_FILE]
    return {"step": trained.step, "files": [str(f) for f in files]}
