"""The Python API: what ``import nlpjax`` offers scripts and notebooks.

``load_config`` -> ``train`` -> ``load`` -> ``Trained.evaluate`` / ``Trained.generate``;
the CLI's train, eval and generate are thin layers over these functions, so a script
gets the same numbers and the same text as the command line. Tasks are looked up by
name in ``nlpjax.tasks.TASKS`` here (a face), and passed on to the config loader and
the loop as classes.
"""

import dataclasses
import math
import time
from collections.abc import Mapping
from typing import Any

import ml_collections
from etils import epath

from nlpjax import config as config_lib
from nlpjax.config import Config
from nlpjax.errors import ConfigError
from nlpjax.tasks.registry import TASKS, register_task
from nlpjax.training import loop
from nlpjax.training import run as run_lib
from nlpjax.training.run import Run, restore_trained

__all__ = ["TASKS", "Trained", "load", "load_config", "register_task", "train"]


def load_config(
    path_or_dict: str | epath.PathLike | Mapping | Config,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """A validated ``Config`` from an experiment file spec (``"path.py[:variant]"``), a
    dict (or ``ConfigDict``) with every section, or a ``Config``; then ``overrides``.

    Overrides are dotted keys as on the command line, e.g. ``{"optim.lr": 3e-4}``; values
    may be strings (typed like the value they replace) or Python values.
    """
    overrides = dict(overrides or {})
    if isinstance(path_or_dict, Config):
        path_or_dict = path_or_dict.to_dict()
    if isinstance(path_or_dict, Mapping | ml_collections.ConfigDict):
        tree = path_or_dict
        if not isinstance(tree, ml_collections.ConfigDict):
            tree = ml_collections.ConfigDict(_plain(tree))
        return config_lib.load_tree(tree, overrides, TASKS)
    return config_lib.load_config(str(path_or_dict), overrides, TASKS)


def _plain(tree: Mapping) -> dict:
    """Nested mappings and dataclass sections -> nested dicts (tuples kept)."""
    out = {}
    for key, value in tree.items():
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        out[key] = _plain(value) if isinstance(value, Mapping) else value
    return out


def task_class(config: Config) -> type:
    """The registered class of ``config.task`` (an unknown name lists the known ones)."""
    return config_lib.task_class(config.task, TASKS)


def train(config: Config | str | Mapping, workdir: str | epath.PathLike) -> dict:
    """Trains (or resumes) ``config`` in ``workdir``; returns the run's summary dict.

    ``config`` is a ``Config`` or anything ``load_config`` takes. The summary holds
    ``start_step``, ``final_step``, ``num_params``, ``train_loss`` and the last
    ``eval/...`` numbers. Raises ``nlpjax.errors.TrainingDiverged`` on a NaN/Inf loss and
    the other ``nlpjax.errors`` for bad input (the CLI turns those into exit codes).
    """
    if not isinstance(config, Config):
        config = load_config(config)
    return loop.train_and_evaluate(config, workdir, task_cls=task_class(config))


@dataclasses.dataclass
class Trained:
    """A trained workdir's checkpoint, on one device (from ``nlpjax.load``)."""

    run: Run
    step: int
    workdir: str

    @property
    def config(self) -> Config:
        return self.run.config

    @property
    def params(self) -> Any:
        return self.run.state.params

    @property
    def task(self) -> Any:
        return self.run.task

    @property
    def tokenizer(self) -> Any:
        """The task's tokenizer (None for a task without one)."""
        return getattr(self.run.task, "tokenizer", None)

    def evaluate(self, split: str = "validation") -> dict[str, float]:
        """The task's eval numbers on ``split`` (what ``nlpjax eval`` prints): loss,
        perplexity and, for language models, bits per character and per UTF-8 byte."""
        return self.evaluate_timed(split, warm_up=False)[0]

    def evaluate_timed(
        self, split: str = "validation", warm_up: bool = True
    ) -> tuple[dict[str, float], int, float]:
        """(numbers, tokens evaluated, seconds of the evaluation).

        With ``warm_up``, the default loss average (a few fixed batches) runs once to compile
        and the seconds are those of a second, compiled run. A task's own ``evaluate`` hook
        (decoding whole splits, word-vector benchmarks) runs once either way: a second run
        would double its cost, so its seconds include compilation."""
        import jax

        from nlpjax.training.evaluation import Evaluation

        task = self.run.task
        evaluation = Evaluation(task, self.run.placement, self.config.eval.seed, split)
        extras = {"carry": self.run.state.carry, "step": self.step}
        if warm_up and evaluation.hook is None:
            jax.block_until_ready(evaluation(self.params, extras))  # compile
        start = time.perf_counter()
        summary = jax.block_until_ready(evaluation(self.params, extras))
        seconds = time.perf_counter() - start
        metrics = evaluation.last_metrics  # the loss average's, when the task has no hook
        tokens = float(metrics.get("weight", 0))
        text_units = getattr(task, "text_units", None)  # optional Task hook (LMs)
        if text_units is not None and metrics:
            units = text_units(evaluation.host_batches)
            nats = float(metrics["loss"]) * tokens
            summary["bits_per_char"] = nats / (math.log(2) * units["characters"])
            summary["bits_per_byte"] = nats / (math.log(2) * units["bytes"])
        return summary, int(tokens), seconds

    def generator(self, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, cache=None):
        """The task's text generator for these params (``.generate`` and ``.stream``).

        ``cache``: a ``nlpjax.inference.stream_cache.StreamConfig`` to sample through a
        streaming cache (``nlpjax generate --cache``); None keeps the task's default.
        """
        from nlpjax.inference.decode import SamplingConfig

        hook = getattr(self.run.task, "generator", None)
        if hook is None:
            raise ConfigError(
                f"the {self.config.task!r} task has no text generator (nlpjax generate and "
                "Trained.generate serve tasks that define generator(params, sampling))"
            )
        sampling = SamplingConfig(temperature, top_k, top_p)
        if cache is None:
            return hook(self.params, sampling)
        return hook(self.params, sampling, cache=self.stream_config(cache))

    def stream_config(self, cache):
        """``cache`` (a ``StreamConfig``) checked against this model, defaults filled in
        (``stream_config``)."""
        return stream_config(self.workdir, cache, self.config)

    def stream_evaluate(self, cache, split: str = "validation", max_tokens: int = 0, **kw):
        """Per-token negative log-likelihoods of ``split`` read as one stream, token by
        token, under ``cache`` (``nlpjax eval --stream``): see ``stream_eval.run``."""
        from nlpjax.evaluation import stream_eval

        resolved = self.stream_config(cache)
        tokens = self.run.task.tokens(split)
        if max_tokens:
            tokens = tokens[:max_tokens]
        stepper = self.run.task.stream_stepper(resolved)
        return stream_eval.run(stepper, self.params, tokens, resolved, **kw)

    def generate(
        self,
        prompt: str = "\n",
        max_new_tokens: int = 200,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> str:
        """The text sampled after ``prompt`` (prompt excluded), as ``nlpjax generate``
        prints it for the same arguments and seed; ``temperature=0`` is greedy."""
        if max_new_tokens < 0:
            raise ValueError("max_new_tokens must be >= 0")
        generator = self.generator(temperature, top_k, top_p)
        return generator.generate(prompt, max_new_tokens, seed=seed)


def stream_config(workdir: str | epath.PathLike, cache, config: Config | None = None):
    """``cache`` (a ``nlpjax.inference.stream_cache.StreamConfig``) checked against the
    model saved in ``workdir`` (its ``config.json``, or ``config``), defaults filled in,
    without restoring any checkpoint; a task without a streaming decoder (no
    ``stream_stepper``) is a ``ConfigError``."""
    from nlpjax.inference import stream_cache

    config = config or run_lib.load_workdir_config(workdir, TASKS)
    if getattr(TASKS[config.task], "stream_stepper", None) is None:
        raise ConfigError(
            f"the {config.task!r} task has no streaming cache (--cache and --stream serve "
            "decoder language models, task 'lm')"
        )
    where = str(epath.Path(workdir) / loop.CONFIG_FILE)
    return stream_cache.resolve(cache, config.model, where)


def load(workdir: str | epath.PathLike, step: int | None = None) -> Trained:
    """Opens ``workdir`` at checkpoint ``step`` (None: the latest readable one)."""
    run, restored = restore_trained(workdir, TASKS, step)
    return Trained(run, restored, str(workdir))


# -- lower level: the assembled run (benchmarks, tests, custom loops) -----------------------


def build_run(config: Config, workdir=None, placement=None) -> Run:
    """``nlpjax.training.run.build_run`` with the task class looked up by name."""
    return run_lib.build_run(config, workdir, placement, task_cls=task_class(config))


def restore_run(workdir: str | epath.PathLike, step: int | None = None) -> tuple[Run, int]:
    """(run, step) of ``workdir`` restored on one device (see ``load``)."""
    return restore_trained(workdir, TASKS, step)
