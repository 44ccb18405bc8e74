"""The Task interface: the only thing the training loop knows about a model family.

A task ties a model, its data, its loss and its evaluation together. The loop, the
checkpointing, the CLI and the step builders use nothing else, so adding a model family
means adding a task (plus its model and configs) without touching them. A task class is
registered by name in ``nlpjax.TASKS`` (``nlpjax.register_task``); the faces (CLI and
``nlpjax.api``) look it up and pass it to the config loader and the loop, which never
import a family.

Today evaluation is a loss average (``eval_batches`` + ``loss`` + ``eval_summary``), the
update is the shared optax path and the carry is replicated; later revisions of this
interface may add hooks with those as their defaults (an ``evaluate`` that sees the
params, a task's own update rule, a carry with a batch axis), so a task written against
this one keeps working.
"""

from typing import Any, ClassVar, Protocol

import grain

from nlpjax.config import Config
from nlpjax.types import Batch, Metrics, Params, PRNGKey


class Task(Protocol):
    """What a model family provides to the shared trainer.

    Attributes:
      model_config_cls: frozen dataclass for the ``model`` config section.
      data_config_cls: frozen dataclass for the ``data`` config section.
      config: the resolved config, with data-derived values (e.g. vocab size) filled in.
    """

    model_config_cls: ClassVar[type]
    data_config_cls: ClassVar[type]
    config: Config

    def init(self, rng: PRNGKey) -> Any:
        """Returns initial variables (params possibly boxed with logical axis names)."""

    def init_carry(self) -> Any:
        """Task state threaded through training steps ({} when none)."""

    def loss(
        self, params: Params, carry: Any, batch: Batch, rng: PRNGKey, train: bool
    ) -> tuple[Any, tuple[Metrics, Any]]:
        """Pure, jittable: (scalar loss, (metrics, new carry)).

        Metrics may include ``"weight"`` (tokens counted) for weighted averaging.
        """

    def train_iterator(self) -> grain.DatasetIterator:
        """A checkpointable iterator of host (numpy) training batches."""

    def eval_batches(self) -> Batch:
        """Fixed evaluation batches stacked on a leading axis (num_batches, ...)."""

    def eval_summary(self, metrics: Metrics) -> Metrics:
        """Turns averaged eval metrics into the numbers to report (e.g. perplexity)."""

    def global_batch_size(self) -> int:
        """Examples per training step over all hosts (must split over data parallelism)."""

    def tokens_per_batch(self) -> int:
        """Tokens processed per training batch (for throughput)."""

    def flops_per_token(self) -> float:
        """Training FLOPs per token (forward + backward), for MFU."""

    def compute_dtype(self) -> str:
        """The dtype the model computes in (e.g. ``"bfloat16"``), for the MFU peak."""

    def save_assets(self, directory: str) -> None:
        """Writes what eval/generate need beyond params (e.g. the vocabulary)."""

    def model_signature(self) -> dict[str, Any]:
        """What a checkpoint must match to be restored into this task."""

    # -- faces (CLI and nlpjax.api): optional for a task that has no text to show ----------

    def generator(self, params: Params, sampling: Any) -> Any:
        """A text generator for ``params``: ``.generate(prompt, max_new_tokens, seed)`` and
        ``.stream(...)`` (see ``nlpjax.inference.text_generator.TextGenerator``). The task
        picks the decoding (decoder-only today, an encoder-decoder's next)."""

    def describe_data(self, split: str, num_examples: int) -> str:
        """The text ``nlpjax data inspect`` prints for this task's data."""
