"""What every model config dataclass shares: its checkpoint signature and a checker."""

import dataclasses
from typing import ClassVar

from nlpjax.errors import ConfigError


class ModelConfig:
    """Base of the frozen ``model`` section dataclasses (decoder, RNN, T5, SGNS).

    ``RUNTIME_FIELDS`` name how a model computes, not what it is (compute dtype, attention
    kernel, remat, scan unrolling): a checkpoint restores under any of their values, so
    ``signature()``, what a checkpoint must match, leaves them out.
    """

    RUNTIME_FIELDS: ClassVar[tuple[str, ...]] = ()

    def signature(self) -> dict:
        """The fields a checkpoint must match (everything but ``RUNTIME_FIELDS``)."""
        fields = dataclasses.asdict(self)
        return {k: v for k, v in fields.items() if k not in self.RUNTIME_FIELDS}

    @staticmethod
    def check(ok: bool, message: str) -> None:
        """Raises ``ConfigError(message)`` unless ``ok`` (for ``__post_init__``)."""
        if not ok:
            raise ConfigError(message)
