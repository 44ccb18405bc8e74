"""The errors nlpjax raises for user mistakes and stopped runs (a leaf: imports nothing).

Every module raises these from here; the CLI maps them to exit codes (2 for bad input,
1 for ``TrainingDiverged``). They are also re-exported where they used to live
(``nlpjax.config.ConfigError``, ``nlpjax.data.raw.DataError``, ...).
"""


class ConfigError(ValueError):
    """A config file, override or value is invalid; the message says how to fix it."""


class DataError(ValueError):
    """Missing, empty or malformed input data; the message names the file and the fix."""


class VocabularyMismatchError(DataError):
    """A saved vocabulary differs from the one a checkpoint or config expects."""


class CheckpointMismatchError(ValueError):
    """The checkpoint in a workdir belongs to a different model or task."""


class ConfigChangeError(CheckpointMismatchError):
    """A resume asked for a config change that the saved checkpoint cannot follow."""


class WorkdirBusyError(ValueError):
    """Another live run holds the workdir (a user mistake: the CLI exits with code 2)."""


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""
