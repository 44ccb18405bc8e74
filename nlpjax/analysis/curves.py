"""Training curves: train and eval loss against step, as a PNG in the workdir."""

import io

import matplotlib
from etils import epath

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from nlpjax.training.metrics import read_metrics  # noqa: E402


def plot_curves(workdir: epath.PathLike, output: epath.PathLike | None = None) -> epath.Path:
    """Plots ``train/loss`` and ``eval/loss`` (and eval perplexity if logged)."""
    rows = read_metrics(workdir)
    if not rows:
        raise FileNotFoundError(f"no metrics.jsonl in {workdir}: train first")
    output = epath.Path(output or epath.Path(workdir) / "curves.png")

    def series(key):
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), int | float)]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for key, style in (("train/loss", "-"), ("eval/loss", "o-")):
        steps, values = series(key)
        if steps:
            ax.plot(steps, values, style, label=key, markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(f"{epath.Path(workdir).name}: training curves")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_png(fig, output)


def save_png(fig, path: epath.PathLike) -> epath.Path:
    """Writes ``fig`` as a PNG to ``path`` (any epath: local or a bucket) and closes it."""
    path = epath.Path(path)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    path.write_bytes(buffer.getvalue())
    plt.close(fig)
    return path
