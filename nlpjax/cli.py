"""The ``nlpjax`` command line: train, eval, generate, plot, plan, data, neighbors, export
(thin: parse, dispatch).

Exit codes: 0 success (and a clean stop on SIGTERM), 1 training diverged, 2 bad input
(one ``error: ...`` line), 130 interrupted by Ctrl-C before training started.
"""

import argparse
import errno
import gc
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from nlpjax import compile_cache

USAGE_ERRORS_EXIT = 2
DIVERGED_EXIT = 1
INTERRUPTED_EXIT = 130  # 128 + SIGINT, what shells report for Ctrl-C

DESCRIPTION = """\
nlpjax: train, evaluate and sample JAX/Flax NLP models from small Python config files.

Run `nlpjax COMMAND --help` for the options and examples of each command."""

EXIT_CODES = """\
exit codes:
  0    success (also a clean stop on SIGTERM or Ctrl-C during training: the step is saved)
  1    training diverged (NaN/Inf loss; the last good checkpoint is kept)
  2    bad input: config, data, workdir, checkpoint or prompt (one `error: ...` line)
  130  interrupted by Ctrl-C before training started (nothing new was saved)"""

MAIN_EPILOG = f"""\
examples:
  nlpjax train --config=experiments/shakespeare_char.py --workdir=/tmp/run1
  nlpjax eval --workdir=/tmp/run1
  nlpjax generate --workdir=/tmp/run1 --prompt="ROMEO:" --max_new_tokens=300

{EXIT_CODES}"""

TRAIN_EPILOG = f"""\
config overrides:
  Any key of the config file can be changed with --config.SECTION.KEY=VALUE (or
  --config.SECTION.KEY VALUE); the value is typed like the one it replaces. An unknown
  or misspelled key is an error naming the closest valid key. The run prints the keys
  it changed, e.g. `config overrides: optim.lr 0.001 -> 0.0003`.
  Sections: model, data, optim, train, eval, checkpoint, parallel (see README.md).

examples:
  nlpjax train --config=experiments/shakespeare_char.py --workdir=/tmp/run1
  nlpjax train --config=experiments/shakespeare_char.py:tiny --workdir=/tmp/tiny
  nlpjax train --config=experiments/shakespeare_char.py --workdir=/tmp/run2 \\
      --config.optim.lr=3e-4 --config.train.steps=500

Running the same command again resumes from the latest checkpoint (a finished run is a
no-op). SIGTERM or Ctrl-C saves the current step and exits 0.

{EXIT_CODES}"""

EVAL_EPILOG = """\
Prints the loss, the perplexity per token and, for language models, bits per character
and per UTF-8 byte (total nats / (ln 2 x characters or bytes of the text the evaluated
tokens decode to)), which compare across tokenizers.

With --stream, the split is read as one long text token by token through a cache mode
(--cache, default sink_window; see `nlpjax generate --help`), with a progress bar; it
prints the perplexity and tokens/s and writes the per-position curve to
WORKDIR/stream_eval_MODE.npz (`nll`: nats per predicted token) and a summary to
WORKDIR/stream_eval_MODE.json. --cache=dense needs --max_tokens <= --capacity + 1.

examples:
  nlpjax eval --workdir=/tmp/run1
  nlpjax eval --workdir=/tmp/run1 --split=train
  nlpjax eval --workdir=/tmp/run1 --step=500
  nlpjax eval --workdir=/tmp/stream --stream --cache=sink_window --n_sink=4 --window=124
  nlpjax eval --workdir=/tmp/stream --stream --cache=recompute --max_tokens=20000"""

GENERATE_EPILOG = """\
Past the model's context the window slides: when the KV cache is full, the last half
context of tokens is re-encoded into a fresh cache and generation continues, so any
--max_new_tokens works. --cache picks a fixed-size streaming cache instead (decoder LMs;
window and sink_window need model.positions=rope), one compiled step per token:
  dense        every token at its position, up to --capacity (default: the context)
  window       the --window most recent tokens (default: the context)
  sink_window  the first --n_sink tokens (default 4) + the --window most recent
               (default: the context minus n_sink): StreamingLLM's attention sinks
  recompute    re-runs the model on the last --window tokens for every token (slow)
A learned sink token or registers (model.sink_token, model.num_registers) are always
kept, in front of the n_sink tokens. Ids that stand for no text (<pad>, <unk>, <s>, <pause>, <sink>,
registers, sentinels) are never generated. The text is printed as it is generated when
stdout is a terminal (--stream); the rate (tokens/s) goes to stderr at the end.

Encoder-decoder (seq2seq) workdirs translate instead: --input="TEXT" or --input_file=PATH
(one input per line, decoded in batches) prints one output per line and nothing else
(no echo of the input); an empty input line gives an empty output line. They decode
greedily unless --temperature is given, at most --max_new_tokens tokens (and for a
T5, at most its model.max_target_len).

examples:
  nlpjax generate --workdir=/tmp/run1 --prompt="ROMEO:" --max_new_tokens=300 \\
      --temperature=0.8 --top_k=40 --seed=0
  nlpjax generate --workdir=/tmp/run1 --temperature=0 --no-stream > sample.txt
  nlpjax generate --workdir=/tmp/stream --cache=sink_window --n_sink=4 --window=124 \
      --max_new_tokens=100000
  nlpjax generate --workdir=/tmp/t5 --input="Ein Mann fährt Fahrrad."
  nlpjax generate --workdir=/tmp/t5 --input_file=sources.de > hypotheses.en"""

PLOT_EPILOG = """\
examples:
  nlpjax plot --workdir=/tmp/run1
  nlpjax plot --workdir=/tmp/run1 --output=/tmp/run1-curves.png"""

ANALYZE_EPILOG = """\
Probes of a decoder checkpoint on the split's first evaluation batch: mean attention of
the tokens on position 0 (the sink token, or the first token) and on the registers, per
layer and head; the fraction of token hidden states whose norm exceeds FACTOR x the
median, per layer. Writes OUT_attention.png, OUT_norms.png and OUT_probes.json
(default OUT: WORKDIR/probes/step_STEP).

examples:
  nlpjax analyze --workdir=/tmp/run1
  nlpjax analyze --workdir=/tmp/run1 --step=500 --factor=5 --out=/tmp/probes/run1"""

PLAN_EPILOG = """\
Activations are what the backward pass keeps (the residuals of jax.vjp of the loss,
traced, not run), shown without remat and with the configured model.remat. With
--device_memory_gb, a plan whose total (configured remat) exceeds it is refused
(exit 2).

examples:
  nlpjax plan --config=experiments/shakespeare_char.py
  nlpjax plan --config=experiments/shakespeare_char.py --simulate_devices=8 \\
      --config.parallel.mesh=data:2,fsdp:2,tensor:2
  nlpjax plan --config=experiments/gpt2_small_char.py:plan_1b --simulate_devices=8 \\
      --no-compile --device_memory_gb=80"""

NEIGHBORS_EPILOG = """\
Nearest neighbours by cosine of the center vectors of a word2vec (sgns) workdir; a word
is matched exactly, else in any casing. Several words: repeat --word or separate them
with commas.

examples:
  nlpjax neighbors --workdir=/tmp/sgns --word=king
  nlpjax neighbors --workdir=/tmp/sgns --word=king,queen --word=London --k=5"""

EXPORT_EPILOG = """\
Writes a workdir's trained model in another program's format, to OUT:
  word2vec         word2vec's text format (an sgns workdir's center vectors: a "count
                   dim" line, then "word v1 ... vE" per word, most frequent first)
  word2vec-binary  word2vec's binary format (float32 little-endian values)
Both load with gensim.models.KeyedVectors.load_word2vec_format(OUT, binary=...).
  hf-t5            a Hugging Face T5 directory (a seq2seq workdir): config.json,
                   model.safetensors (float32), spiece.model, tokenizer_config.json;
                   T5ForConditionalGeneration.from_pretrained(OUT) reads it
A file OUT is written whole or not at all (an existing file is replaced only on success);
a directory OUT must be new or empty.

examples:
  nlpjax export --workdir=/tmp/sgns --to=word2vec /tmp/vectors.txt
  nlpjax export --workdir=/tmp/sgns --to=word2vec-binary --step=2460 /tmp/vectors.bin
  nlpjax export --workdir=/tmp/t5s --to=hf-t5 /tmp/t5s-hf"""

IMPORT_EPILOG = """\
Converts a Hugging Face T5 directory (config.json; model.safetensors or pytorch_model.bin;
spiece.model) into a new seq2seq workdir with a step-0 checkpoint that eval, generate and
train read (v1.0 and v1.1 / mT5 layouts). Reading needs the hf extra: pip install
'nlpjax[hf]'. --config.SECTION.KEY=VALUE sets the workdir's other settings (data.prefix,
data.dataset, ...); the model's shape comes from the checkpoint.

examples:
  nlpjax import --from=hf-t5 ./t5-small --workdir=/tmp/t5s \\
      --config.data.prefix="translate English to German: "
  nlpjax generate --workdir=/tmp/t5s --input="A man is riding a horse." --temperature=0"""


INSPECT_EPILOG = """\
examples:
  nlpjax data inspect --config=experiments/shakespeare_char.py
  nlpjax data inspect --config=experiments/shakespeare_char.py --split=validation \\
      --config.data.tokenizer=byte"""


class WorkdirError(ValueError):
    """A workdir or output path that is a file, or cannot be written."""


def _parse_overrides(extra: list[str], parser: argparse.ArgumentParser) -> dict[str, str]:
    """``--config.a.b=v`` (or ``--config.a.b v``) pairs; anything else is an error."""
    overrides, i = {}, 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--config."):
            parser.error(f"unrecognized argument: {arg}")
        key, eq, value = arg[len("--config.") :].partition("=")
        if not eq:
            if i + 1 >= len(extra):
                parser.error(f"{arg} needs a value (--config.{key}=VALUE)")
            value, i = extra[i + 1], i + 1
        overrides[key] = value
        i += 1
    return overrides


def _subparser(sub, name: str, help_text: str, epilog: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help_text,
        description=help_text[0].upper() + help_text[1:] + ".",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _cache_arguments(group, default_help: str) -> None:
    """``--cache``, ``--n_sink``, ``--window``, ``--capacity`` (checked by
    ``stream_cache.resolve``: a mistake is one ``error:`` line, exit 2)."""
    group.add_argument(
        "--cache",
        default=None,
        metavar="MODE",
        help=f"dense | window | sink_window | recompute (default: {default_help})",
    )
    group.add_argument("--n_sink", type=int, default=None, help="sink_window: first tokens kept")
    group.add_argument("--window", type=int, default=0, help="recent tokens kept (0: context)")
    group.add_argument("--capacity", type=int, default=0, help="dense: tokens held (0: context)")


def _stream_config(args, default_mode: str | None):
    """The ``StreamConfig`` the flags ask for (None: no streaming cache)."""
    from nlpjax.inference.stream_cache import StreamConfig

    mode = args.cache or default_mode
    given = args.n_sink is not None or args.window or args.capacity
    if mode is None:
        if given:
            raise ValueError("--n_sink, --window and --capacity need --cache=MODE")
        return None
    return StreamConfig(mode, args.n_sink, args.window, args.capacity)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nlpjax",
        description=DESCRIPTION,
        epilog=MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_help = "experiment file, PATH[:VARIANT] (e.g. experiments/shakespeare_char.py:tiny)"

    train = _subparser(sub, "train", "train an experiment, or resume it", TRAIN_EPILOG)
    train.usage = (
        "nlpjax train --config=FILE[:VARIANT] --workdir=DIR [--config.SECTION.KEY=VALUE ...]"
    )
    train.add_argument("--config", required=True, metavar="FILE[:VARIANT]", help=config_help)
    train.add_argument(
        "--workdir", required=True, metavar="DIR", help="checkpoints, metrics and logs go here"
    )
    multi = train.add_argument_group("multi-host (see tpu/README.md)")
    multi.add_argument(
        "--coordinator_address", default=None, metavar="HOST:PORT", help="address of process 0"
    )
    multi.add_argument(
        "--num_processes", type=int, default=None, metavar="N", help="number of processes"
    )
    multi.add_argument(
        "--process_id", type=int, default=None, metavar="I", help="this process, 0..N-1"
    )
    multi.add_argument(
        "--distributed",
        action="store_true",
        help="initialize with no flags (Cloud TPU pods, SLURM)",
    )

    ev = _subparser(sub, "eval", "evaluate a checkpoint of a workdir", EVAL_EPILOG)
    ev.add_argument("--workdir", required=True)
    ev.add_argument(
        "--split",
        default="validation",
        help="validation (default), train, or test for corpora that have one",
    )
    ev.add_argument(
        "--step", type=int, default=None, help="a kept checkpoint step (default: the latest)"
    )
    ev.add_argument(
        "--beam_size",
        type=int,
        default=None,
        help="encoder-decoder workdirs: translate with a beam of N (1: greedy; default: the "
        "run's data.beam_size)",
    )
    streaming = ev.add_argument_group("streaming (--stream)")
    streaming.add_argument(
        "--stream", action="store_true", help="per-token perplexity of the split as one stream"
    )
    _cache_arguments(streaming, default_help="sink_window")
    streaming.add_argument(
        "--max_tokens", type=int, default=0, help="stream the first N tokens (0: all)"
    )

    gen = _subparser(
        sub, "generate", "sample text from a workdir's latest checkpoint", GENERATE_EPILOG
    )
    gen.add_argument("--workdir", required=True)
    gen.add_argument("--prompt", default=None, help="text to continue (default: a newline)")
    gen.add_argument(
        "--input", default=None, help="encoder-decoder workdirs: the text to translate"
    )
    gen.add_argument(
        "--input_file",
        default=None,
        metavar="PATH",
        help="encoder-decoder workdirs: one input per line (UTF-8); one output per line",
    )
    gen.add_argument("--max_new_tokens", type=int, default=200, help="0 prints the prompt only")
    gen.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="0 means greedy (default: 1 for language models, 0 for encoder-decoders)",
    )
    gen.add_argument("--top_k", type=int, default=0, help="0 disables top-k")
    gen.add_argument("--top_p", type=float, default=1.0, help="1 disables nucleus sampling")
    gen.add_argument("--seed", type=int, default=0, help="the same seed gives the same text")
    gen.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="print tokens as they are generated (default: on when stdout is a terminal)",
    )
    _cache_arguments(gen.add_argument_group("streaming cache"), default_help="none")

    plot = _subparser(sub, "plot", "write a PNG of the training curves", PLOT_EPILOG)
    plot.add_argument("--workdir", required=True)
    plot.add_argument("--output", default=None, help="default: WORKDIR/curves.png")

    analyze = _subparser(
        sub,
        "analyze",
        "attention-sink, register and outlier probes of a checkpoint",
        ANALYZE_EPILOG,
    )
    analyze.add_argument("--workdir", required=True)
    analyze.add_argument("--step", type=int, default=None, help="default: the latest")
    analyze.add_argument("--split", default="validation")
    analyze.add_argument(
        "--factor", type=float, default=3.0, help="outlier: norm > FACTOR x median"
    )
    analyze.add_argument("--out", default=None, help="path prefix of the files written")

    plan = _subparser(sub, "plan", "memory per device for a config and mesh", PLAN_EPILOG)
    plan.usage = (
        "nlpjax plan --config=FILE[:VARIANT] [--simulate_devices=N] [--device_memory_gb=GIB] "
        "[--no-compile] [--config.SECTION.KEY=VALUE ...]"
    )
    plan.add_argument("--config", required=True, help=config_help)
    plan.add_argument(
        "--simulate_devices",
        type=int,
        default=0,
        help="plan on N simulated CPU devices (the CPU compiler's estimates)",
    )
    plan.add_argument(
        "--device_memory_gb",
        type=float,
        default=None,
        help="memory of one device in GiB (2^30 bytes); refuse a plan that needs more",
    )
    plan.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compile the step for XLA's temporaries and FLOPs (--no-compile: skip it; "
        "minutes saved for large models)",
    )

    _add_word_vector_parsers(sub)

    imp = _subparser(sub, "import", "convert another framework's checkpoint", IMPORT_EPILOG)
    imp.usage = "nlpjax import --from=hf-t5 PATH --workdir=DIR [--config.SECTION.KEY=VALUE ...]"
    imp.add_argument("--from", dest="source_format", required=True, choices=["hf-t5"])
    imp.add_argument("path", metavar="PATH", help="the Hugging Face checkpoint directory")
    imp.add_argument("--workdir", required=True, help="a new workdir to write")

    data = sub.add_parser(
        "data", help="look at a config's data", description="Look at a config's data."
    )
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    inspect = _subparser(
        data_sub, "inspect", "sizes, vocabulary, decoded batches and speed", INSPECT_EPILOG
    )
    inspect.usage = (
        "nlpjax data inspect --config=FILE[:VARIANT] [--split=SPLIT] [--num_examples=N] "
        "[--config.SECTION.KEY=VALUE ...]"
    )
    inspect.add_argument("--config", required=True, help=config_help)
    inspect.add_argument("--split", default="train", choices=["train", "validation"])
    inspect.add_argument("--num_examples", type=int, default=3)
    return parser


# -- workdirs ------------------------------------------------------------------------------


def _add_word_vector_parsers(sub) -> None:
    """``neighbors`` and ``export`` (``EXPORTERS`` and ``DIRECTORY_EXPORTERS`` name the
    formats ``--to`` takes)."""
    near = _subparser(
        sub, "neighbors", "nearest neighbours of words in a word2vec workdir", NEIGHBORS_EPILOG
    )
    near.add_argument("--workdir", required=True)
    near.add_argument(
        "--word",
        action="append",
        required=True,
        metavar="WORD[,WORD...]",
        help="a word to look up (repeatable; commas separate several)",
    )
    near.add_argument("--k", type=int, default=10, help="neighbours per word (default 10)")
    near.add_argument("--step", type=int, default=None, help="default: the latest checkpoint")

    export = _subparser(sub, "export", "write a workdir's model in another format", EXPORT_EPILOG)
    export.usage = "nlpjax export --workdir=DIR --to=FORMAT [--step=STEP] OUT"
    export.add_argument("--workdir", required=True)
    formats = sorted(EXPORTERS | DIRECTORY_EXPORTERS)
    export.add_argument("--to", required=True, choices=formats, help="the format")
    export.add_argument("--step", type=int, default=None, help="default: the latest checkpoint")
    export.add_argument("out", metavar="OUT", help="the file (or, for hf-t5, directory) to write")


def _word_vectors(trained, command: str):
    """The ``WordVectors`` of a loaded workdir; a task without them is a ValueError."""
    task = trained.task
    if not hasattr(task, "word_vectors"):
        raise ValueError(
            f"the {trained.config.task!r} task has no word vectors; `nlpjax {command}` "
            "reads a word2vec (sgns) workdir"
        )
    return task.word_vectors(trained.params)


def cmd_neighbors(args) -> int:
    from nlpjax import api
    from nlpjax.evaluation import word_vectors as wvec

    words = [w for value in args.word for w in value.split(",") if w]
    if not words or args.k < 1:
        raise ValueError("give at least one --word and --k >= 1")
    _not_a_file(args.workdir, "--workdir")
    trained = api.load(args.workdir, args.step)
    wv = _word_vectors(trained, "neighbors")
    exact, folded = set(wv.words), wv.lookup()
    unknown = [w for w in words if w not in exact and w.upper() not in folded]
    if unknown:
        raise ValueError(
            f"not in the vocabulary of {args.workdir} ({len(wv.words):,} words, "
            f"data.tokenizer.min_count={trained.config.data.tokenizer.min_count}): "
            + ", ".join(repr(w) for w in unknown)
        )
    for word in words:
        found = wvec.nearest_neighbors(wv, word, k=args.k)
        print(f"{word}: " + ", ".join(f"{w} {cosine:.3f}" for w, cosine in found))
    return 0


def _export_word2vec(trained, out: Path, binary: bool) -> None:
    from nlpjax.evaluation import word_vectors as wvec

    wvec.save_word2vec(out, _word_vectors(trained, "export"), binary=binary)


def _export_hf_t5(workdir: str, out: str, step: int | None) -> dict:
    from nlpjax.interop.hf_workdir import export_hf_t5

    return export_hf_t5(workdir, out, step)


# --to FORMAT -> writer(trained workdir, output path): each writes the whole file.
EXPORTERS = {
    "word2vec": lambda trained, out: _export_word2vec(trained, out, binary=False),
    "word2vec-binary": lambda trained, out: _export_word2vec(trained, out, binary=True),
}
# --to FORMAT -> writer(workdir, output directory, step): formats that are directories.
DIRECTORY_EXPORTERS = {"hf-t5": _export_hf_t5}


def cmd_export(args) -> int:
    from nlpjax import api

    if args.to in DIRECTORY_EXPORTERS:
        _not_a_file(args.workdir, "--workdir")
        _writable_dir(args.out, "OUT")
        summary = DIRECTORY_EXPORTERS[args.to](args.workdir, args.out, args.step)
        print(f"exported step {summary['step']} of {args.workdir} to {args.out} ({args.to})")
        return 0
    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"OUT {args.out} is a directory; give a file name")
    if not out.parent.is_dir():
        raise ValueError(f"OUT {args.out}: its directory {out.parent} does not exist")
    _not_a_file(args.workdir, "--workdir")
    trained = api.load(args.workdir, args.step)
    # written next to OUT and renamed: an existing OUT survives any failure
    fd, partial = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        EXPORTERS[args.to](trained, Path(partial))
        os.replace(partial, out)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    print(f"wrote {out} ({args.to}, step {trained.step})")
    return 0


def _is_remote(path: str) -> bool:
    return "://" in str(path)


def _not_a_file(path: str, flag: str) -> None:
    """Raises ``WorkdirError`` if ``path`` or one of its parents is a file."""
    if _is_remote(path):
        return
    for p in (Path(path), *Path(path).absolute().parents):
        if p.exists():
            if not p.is_dir():
                raise WorkdirError(
                    f"{flag}={path}: {p} is a file, not a directory; pass a directory path "
                    "(it is created if missing)"
                )
            return


def _writable_dir(path: str, flag: str) -> None:
    """Makes sure ``path`` is (or can be created as) a directory this process can write.

    A real write probe, not permission bits: root ignores those, and a read-only
    filesystem refuses even root.
    """
    if _is_remote(path):
        return
    _not_a_file(path, flag)
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".nlpjax-write-test-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise WorkdirError(
            f"{flag}={path} is not writable ({e.strerror}); use a writable directory, or make "
            "this one writable (read-only filesystem? permissions?). Nothing was changed."
        ) from None


# -- commands ------------------------------------------------------------------------------


def config_changes(spec: str, config) -> list[str]:
    """``KEY OLD -> NEW`` for every key where ``config`` differs from the file's values
    (keys the file leaves out compare with their defaults)."""
    from nlpjax import TASKS
    from nlpjax.config import fill_defaults, flat_keys, load_config_file

    file_config = load_config_file(spec)
    fill_defaults(file_config, TASKS)
    defaults, resolved = file_config.to_dict(), config.to_dict()

    def get(tree, key):
        for part in key.split("."):
            if not isinstance(tree, dict) or part not in tree:
                return None
            tree = tree[part]
        return tree

    changes = []
    for key in flat_keys(defaults):
        old, new = get(defaults, key), get(resolved, key)
        same = list(old) == list(new) if isinstance(old, list | tuple) else old == new
        if new is not None and not same:
            changes.append(
                f"{key} {old!r} -> {new!r}" if isinstance(new, str) else f"{key} {old} -> {new}"
            )
    return changes


_imports_frozen = False


def _freeze_imports() -> None:
    """Once per process: takes every object made so far (mostly the modules a command has
    just imported: jax, flax, orbax, the tasks; about 180,000 objects) out of the cyclic
    garbage collector's full collections, which otherwise walk them all each time (a
    word2vec run made two of about 0.1 s each, benchmarks/README.md). Modules live as long
    as the process; reference counting still frees the rest, and only cyclic garbage
    already there at the freeze (little, after imports) is kept for good."""
    global _imports_frozen
    if not _imports_frozen:  # (gc.get_freeze_count walks the frozen objects)
        gc.freeze()
        _imports_frozen = True


def cmd_train(args, overrides) -> int:
    from nlpjax import api
    from nlpjax.training.parallel import init_distributed

    _freeze_imports()

    flags = (args.coordinator_address, args.num_processes, args.process_id)
    if any(f is not None for f in flags):
        if any(f is None for f in flags):
            raise ValueError(
                "multi-host runs need all of --coordinator_address, --num_processes "
                "and --process_id (or --distributed on Cloud TPU)"
            )
        init_distributed(*flags)
    elif args.distributed:
        init_distributed()

    config = api.load_config(args.config, overrides)
    _writable_dir(args.workdir, "--workdir")
    changes = config_changes(args.config, config)
    if changes:
        print("config overrides: " + "; ".join(changes))
    summary = api.train(config, args.workdir)
    if "eval/loss" in summary:
        print(f"final eval/loss {summary['eval/loss']:.4f} at step {summary['final_step']}")
    return 0


def cmd_plan(args, overrides) -> int:
    if args.simulate_devices:
        os.environ["JAX_PLATFORMS"] = "cpu"
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_force_host_platform_device_count={args.simulate_devices}"
        )
    if args.device_memory_gb is not None and not args.device_memory_gb > 0:
        raise ValueError(f"--device_memory_gb={args.device_memory_gb:g} must be > 0 (GiB)")
    from nlpjax import api
    from nlpjax.training.plan import check_fits, format_plan, plan

    config = api.load_config(args.config, overrides)
    report = plan(config, api.task_class(config), compile=args.compile)
    print(format_plan(report), flush=True)
    if args.device_memory_gb is not None:
        check_fits(report, args.device_memory_gb)
        print(f"fits in --device_memory_gb={args.device_memory_gb:g}")
    return 0


def cmd_eval(args) -> int:
    from nlpjax import api

    _freeze_imports()
    _not_a_file(args.workdir, "--workdir")
    stream_flags = args.cache or args.n_sink is not None or args.window or args.capacity
    if not args.stream and (stream_flags or args.max_tokens):
        raise ValueError(
            "--cache, --n_sink, --window, --capacity and --max_tokens measure a stream: "
            "add --stream"
        )
    if args.max_tokens < 0 or args.max_tokens == 1:
        raise ValueError(f"--max_tokens={args.max_tokens}: give 0 (all) or at least 2")
    if args.beam_size is not None and (args.stream or args.beam_size < 1):
        raise ValueError(f"--beam_size={args.beam_size}: give N >= 1 (1: greedy), without --stream")
    cache = _stream_config(args, "sink_window") if args.stream else None
    if cache is not None:  # flag mistakes fail before the checkpoint is restored
        api.stream_config(args.workdir, cache)
    trained = api.load(args.workdir, args.step)
    if args.beam_size is not None:
        set_beam_size = getattr(trained.task, "set_beam_size", None)
        if set_beam_size is None:
            raise ValueError(
                f"--beam_size is for encoder-decoder workdirs; {args.workdir} holds a "
                f"{trained.config.task!r} run"
            )
        set_beam_size(args.beam_size)
    if cache is not None:
        return _stream_eval(trained, cache, args)
    summary, tokens, seconds = trained.evaluate_timed(args.split)
    print(f"step {trained.step}, split {args.split}")
    for key, value in summary.items():
        print(f"eval/{key} {value:.6f}")
    if tokens:  # a loss average counts its tokens; a task's own evaluate may not
        print(f"eval tokens {tokens}, tokens/s {tokens / seconds:,.0f}")
    else:
        print(f"eval seconds {seconds:.3f} (compilation included)")
    return 0


def _stream_eval(trained, cache, args) -> int:
    from nlpjax.evaluation import stream_eval
    from nlpjax.inference.stream_cache import describe

    _writable_dir(args.workdir, "--workdir")
    result = trained.stream_evaluate(cache, args.split, args.max_tokens, progress=True)
    print(f"step {trained.step}, split {args.split}, {describe(result.cache)}")
    print(f"stream/tokens {result.nll.size}")
    print(f"stream/loss {result.loss:.6f}")
    print(f"stream/perplexity {result.perplexity:.6f}")
    print(f"stream/tokens_per_s {result.tokens_per_second:,.1f}")
    curve, _ = stream_eval.write(result, args.workdir)
    print(f"wrote {curve} (nll per position) and its .json summary")
    return 0


def cmd_generate(args) -> int:
    from nlpjax import api

    if args.max_new_tokens < 0:
        raise ValueError("--max_new_tokens must be >= 0")
    _not_a_file(args.workdir, "--workdir")
    if args.input is not None and args.input_file is not None:
        raise ValueError("give --input or --input_file, not both")
    cache = _stream_config(args, None)
    if cache is not None:  # flag mistakes fail before the checkpoint is restored
        api.stream_config(args.workdir, cache)
    trained = api.load(args.workdir)
    text_to_text = getattr(trained.task, "translator", None) is not None
    greedy_default = 0.0 if text_to_text else 1.0
    temperature = greedy_default if args.temperature is None else args.temperature
    generator = trained.generator(temperature, args.top_k, args.top_p, cache=cache)
    if text_to_text:
        return _translate(args, generator)
    if args.input is not None or args.input_file is not None:
        raise ValueError(
            f"--input and --input_file are for encoder-decoder workdirs; {args.workdir} holds "
            f"a {trained.config.task!r} model: use --prompt"
        )
    args.prompt = "\n" if args.prompt is None else args.prompt
    generator.encode(args.prompt)  # a prompt it cannot encode fails before any output
    stream = sys.stdout.isatty() if args.stream is None else args.stream
    out = sys.stdout
    out.write(args.prompt)
    start = time.perf_counter()
    if stream:
        for piece in generator.stream(args.prompt, args.max_new_tokens, seed=args.seed):
            out.write(piece)
            out.flush()
    else:
        out.write(generator.generate(args.prompt, args.max_new_tokens, seed=args.seed))
    out.write("\n")
    out.flush()
    seconds = time.perf_counter() - start
    count = generator.num_generated
    rate = f", {count / seconds:,.1f} tokens/s" if count and seconds > 0 else ""
    print(f"generated {count} tokens in {seconds:.2f} s{rate}", file=sys.stderr)
    return 0


def _read_inputs(path: str) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"--input_file={path} not found") from None
    except UnicodeDecodeError as e:
        raise ValueError(
            f"--input_file={path} is not UTF-8 text ({e.reason} at byte {e.start})"
        ) from None
    except IsADirectoryError:
        raise ValueError(f"--input_file={path} is a directory; give a text file") from None
    return text.splitlines()


def _translate(args, generator) -> int:
    """``nlpjax generate`` for text-to-text workdirs: one output line per input line."""
    if args.input_file is not None:
        texts = _read_inputs(args.input_file)
    else:
        text = args.input if args.input is not None else args.prompt
        if text is None:
            raise ValueError("give the text to translate: --input=TEXT or --input_file=PATH")
        generator.check(text)  # unknown text or a refused length fails before any output
        texts = [text]
    limit = generator.max_output_len  # None: the model has no length limit (RNN)
    max_len = args.max_new_tokens if limit is None else min(args.max_new_tokens, limit)
    todo = [i for i, t in enumerate(texts) if t.strip()]
    start = time.perf_counter()
    outputs = [""] * len(texts)
    if max_len > 0 and todo:
        translated = generator.translate([texts[i] for i in todo], max_len, seed=args.seed)
        for i, out in zip(todo, translated, strict=True):
            outputs[i] = out.replace("\n", " ")
    sys.stdout.write("".join(out + "\n" for out in outputs))
    sys.stdout.flush()
    seconds = time.perf_counter() - start
    print(f"translated {len(todo)} inputs in {seconds:.2f} s", file=sys.stderr)
    return 0


def cmd_analyze(args) -> int:
    import json

    from nlpjax import api
    from nlpjax.analysis import probes

    if args.factor <= 0:
        raise ValueError(f"--factor must be > 0, got {args.factor}")
    _not_a_file(args.workdir, "--workdir")
    trained = api.load(args.workdir, args.step)
    probe_fn = getattr(trained.task, "probe", None)  # optional Task hook (decoder LMs)
    if probe_fn is None:
        raise ValueError(f"the {trained.config.task!r} task has no probes: analyze reads a decoder")
    out = args.out or str(Path(args.workdir) / "probes" / f"step_{trained.step}")
    _writable_dir(str(Path(out).parent), "--out's directory")
    probe = probe_fn(trained.params, args.split)
    metrics = probes.probe_metrics(probe, args.factor)
    mass = probes.attention_mass(probe)
    cfg = trained.config.model
    print(
        f"step {trained.step}, split {args.split}: {cfg.num_registers} registers, sink "
        f"{'on' if cfg.sink_token else 'off'}, outliers: norm > {args.factor:g} x median"
    )
    for key in ("attn_first_mass", "attn_register_mass", "outlier_fraction"):
        print(f"{key} {metrics[key]:.4f}")
    print("layer head  first  registers")
    layers, heads = mass["first"].shape
    for layer in range(layers):
        for head in range(heads):
            first, registers = mass["first"][layer, head], mass["registers"][layer, head]
            print(f"{layer:5d} {head:4d}  {first:.3f}  {registers:.3f}")
    Path(f"{out}_probes.json").write_text(json.dumps(metrics, indent=1) + "\n")
    for path in [f"{out}_probes.json", *probes.plot_probe(probe, out)]:
        print(f"wrote {path}")
    return 0


def cmd_plot(args) -> int:
    from nlpjax.analysis.curves import plot_curves

    _not_a_file(args.workdir, "--workdir")
    if args.output is None:
        if Path(args.workdir).is_dir():  # a missing workdir is reported by plot_curves
            _writable_dir(args.workdir, "--workdir")
    else:
        if Path(args.output).is_dir():
            raise WorkdirError(f"--output={args.output} is a directory; give a file name (.png)")
        _writable_dir(str(Path(args.output).parent), "--output's directory")
    print(plot_curves(args.workdir, args.output))
    return 0


def cmd_import(args, overrides) -> int:
    from nlpjax.interop.hf_workdir import import_hf_t5

    _writable_dir(args.workdir, "--workdir")
    summary = import_hf_t5(args.path, args.workdir, overrides)
    print(
        f"imported {args.path} into {args.workdir}: {summary['num_params']:,} parameters, "
        f"checkpoint step {summary['step']}"
    )
    return 0


def cmd_data(args, overrides) -> int:
    from nlpjax import api
    from nlpjax.errors import ConfigError

    if args.num_examples < 0:
        raise ValueError("--num_examples must be >= 0")
    config = api.load_config(args.config, overrides)
    task = api.task_class(config)(config, None)
    describe = getattr(task, "describe_data", None)
    if describe is None:
        raise ConfigError(
            f"the {config.task!r} task does not describe its data (nlpjax data inspect "
            "serves tasks that define describe_data(split, num_examples))"
        )
    print(describe(args.split, args.num_examples))
    return 0


# Filesystem errors that mean "this path cannot be used": bad input, not a crash.
_PATH_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM, errno.EEXIST, errno.ENOTDIR, errno.ENOSPC}


def _dispatch(args, overrides) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)

    from nlpjax.errors import (
        CheckpointMismatchError,
        ConfigError,
        DataError,
        TrainingDiverged,
    )

    expected = (ConfigError, DataError, CheckpointMismatchError, FileNotFoundError, ValueError)
    try:
        if args.command == "train":
            return cmd_train(args, overrides)
        if args.command == "plan":
            return cmd_plan(args, overrides)
        if args.command == "data":
            return cmd_data(args, overrides)
        if args.command == "import":
            return cmd_import(args, overrides)
        commands = {"eval": cmd_eval, "generate": cmd_generate, "plot": cmd_plot}
        commands["analyze"] = cmd_analyze
        commands |= {"neighbors": cmd_neighbors, "export": cmd_export}
        return commands[args.command](args)
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return DIVERGED_EXIT
    except expected as e:
        print(f"error: {e}", file=sys.stderr)
        return USAGE_ERRORS_EXIT
    except OSError as e:
        if e.errno not in _PATH_ERRNOS:
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"error: {e.strerror}{where}; use a writable directory", file=sys.stderr)
        return USAGE_ERRORS_EXIT


def _in_finalizer(frame) -> bool:
    """Whether ``frame`` runs inside a garbage-collection callback or a ``__del__``."""
    callbacks = {getattr(cb, "__code__", None) for cb in gc.callbacks}
    while frame is not None:
        if frame.f_code in callbacks or frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


class _CtrlC:
    """SIGINT handler until the training loop installs its own: raises KeyboardInterrupt.

    Python drops (and prints) an exception raised inside a garbage-collection callback
    or ``__del__`` (JAX runs a callback on every collection), so a Ctrl-C landing there
    would be lost: there it is sent again shortly instead, and as a safety net it is
    sent again whenever it has not reached ``main`` a second later.
    """

    def __init__(self):
        self.reached_main = False

    def _resend_after(self, seconds: float) -> None:
        timer = threading.Timer(seconds, self._resend)
        timer.daemon = True
        timer.start()

    def _resend(self):
        if not self.reached_main:
            os.kill(os.getpid(), signal.SIGINT)

    def __call__(self, signum, frame):
        if _in_finalizer(frame):
            self._resend_after(0.05)
            return
        self._resend_after(1.0)
        raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Runs one command; returns the exit code (see ``EXIT_CODES``)."""
    ctrl_c, previous = _CtrlC(), None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, ctrl_c)
    try:
        parser = _build_parser()
        args, extra = parser.parse_known_args(argv)
        with_config = args.command in ("train", "plan", "data", "import")
        overrides = _parse_overrides(extra, parser) if with_config else {}
        if extra and not with_config:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        compile_cache.enable()  # compiled programs kept for the next run (compile_cache.py)
        return _dispatch(args, overrides)
    except KeyboardInterrupt:  # Ctrl-C before the training loop takes over SIGINT
        ctrl_c.reached_main = True
        sys.stdout.flush()
        print("\ninterrupted (Ctrl-C)", file=sys.stderr)
        if argv is None:  # the program itself (not a call from Python): exit now
            sys.stderr.flush()
            # Interpreter teardown with the data and XLA runtimes' threads interrupted
            # mid-work can crash (segfaults seen when stopping dataset preparation);
            # nothing is left to save before the training loop starts.
            os._exit(INTERRUPTED_EXIT)
        return INTERRUPTED_EXIT
    finally:
        ctrl_c.reached_main = True
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":
    sys.exit(main())
