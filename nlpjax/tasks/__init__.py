"""Tasks: one per model family. ``TASKS`` maps a config's ``task`` name to its class."""

from nlpjax.tasks.lm import LMTask

TASKS = {"lm": LMTask}
