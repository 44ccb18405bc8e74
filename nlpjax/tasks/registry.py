"""The task registry: ``TASKS`` maps a config's ``task`` name to its class.

The faces (the CLI and ``nlpjax.api``) look a task up here and hand the class to the
config loader and the training loop, which never import this package. A family defined
outside nlpjax joins with ``register_task`` (``nlpjax.register_task``).
"""

from nlpjax.errors import ConfigError
from nlpjax.tasks.lm import LMTask
from nlpjax.tasks.rnn import RNNLMTask
from nlpjax.tasks.rnn_classify import RNNClassifierTask, RNNTaggerTask
from nlpjax.tasks.rnn_seq2seq import RNNSeq2SeqTask
from nlpjax.tasks.seq2seq import Seq2SeqTask
from nlpjax.tasks.sgns import SGNSTask

TASKS: dict[str, type] = {
    "lm": LMTask,
    "rnn_lm": RNNLMTask,
    "rnn_classifier": RNNClassifierTask,
    "rnn_seq2seq": RNNSeq2SeqTask,
    "rnn_tagger": RNNTaggerTask,
    "seq2seq": Seq2SeqTask,
    "sgns": SGNSTask,
}


def register_task(name: str, task_cls: type) -> type:
    """Registers ``task_cls`` as the task ``name`` (a config's ``task``); returns it.

    The class follows ``nlpjax.tasks.base.Task``: ``task_cls(config, workdir)`` and the
    ``model_config_cls``/``data_config_cls`` its sections are built with. Registering the
    same class again is a no-op; another class under a taken name is an error.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a task name must be a non-empty string, got {name!r}")
    missing = [a for a in ("model_config_cls", "data_config_cls") if not hasattr(task_cls, a)]
    if missing:
        raise ConfigError(
            f"cannot register {task_cls!r} as task {name!r}: it has no {', '.join(missing)} "
            "(the config classes of its model and data sections; see nlpjax.tasks.base.Task)"
        )
    if TASKS.get(name, task_cls) is not task_cls:
        raise ConfigError(
            f"task {name!r} is already registered to {TASKS[name].__qualname__}; "
            "register yours under another name"
        )
    TASKS[name] = task_cls
    return task_cls
