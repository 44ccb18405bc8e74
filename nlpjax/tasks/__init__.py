"""Tasks: one per model family (``base.Task`` is the interface).

This package imports nothing: the registry of families is ``nlpjax.tasks.registry``
(``nlpjax.TASKS``), imported by the faces only, so ``import nlpjax.tasks.base`` (the
loop's view of a task) loads no family.
"""
