"""Evaluating params: the task's ``evaluate`` hook, or the default loss average."""

from nlpjax.tasks.base import make_loss_average
from nlpjax.training import parallel
from nlpjax.training.state import seed_key


class Evaluation:
    """What the loop (and ``nlpjax eval``) calls to evaluate params: the task's
    ``evaluate`` hook, else the weighted loss average over its ``eval_batches`` (placed
    once for the layout) followed by ``eval_summary``. The key for step s is
    ``fold_in(PRNGKey(eval.seed), s)``, so sampled evaluations repeat exactly."""

    def __init__(self, task, placement: parallel.Placement, seed: int, split="validation"):
        self.task, self.placement, self.split = task, placement, split
        self.seed = seed
        self.hook = getattr(task, "evaluate", None)
        if self.hook is None:
            self.host_batches = task.eval_batches(split)
            self.batches = parallel.put_eval_batches(placement, self.host_batches)
            self.average = make_loss_average(task)
        self.last_metrics: dict = {}

    def __call__(self, params, extras: dict) -> dict[str, float]:
        rng = seed_key(self.seed, extras.get("step", 0))  # made on the host: nothing compiles
        with self.placement.context():
            if self.hook is not None:
                return dict(self.hook(params, extras, rng, split=self.split))
            self.last_metrics = self.average(params, self.batches, rng)
            return self.task.eval_summary(self.last_metrics)
