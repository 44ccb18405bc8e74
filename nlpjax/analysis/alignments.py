"""Attention alignments of a trained recurrent encoder-decoder, drawn as heatmaps.

For a few sources of a split, the model's greedy translation is decoded, then the model
reruns teacher-forced on it to read the attention weights (target token x source token,
each row a distribution over the source; ``RNNSeq2Seq`` returns them). One PNG per
sentence and a JSON of the weights are written.

    python -m nlpjax.analysis.alignments --workdir=W [--split=test_2016] [--num=4] [--out=P]
"""

import argparse
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from nlpjax.inference.seq2seq import output_ids


def pieces(tokenizer, ids) -> list[str]:
    """One label per id (a piece's text; special ids by their names)."""
    return [tokenizer.decode([int(i)]) or repr(tokenizer.decode([int(i)])) for i in ids]


def alignments(task, params, texts: list[str]) -> list[dict]:
    """For each source text (cut to the model's source length): its token labels, the
    greedy output's token labels (end id included) and the (T, S) attention weights the
    model gives them."""
    translator = task.translator(params, beam_size=1)
    eos, start = task.tokenizer.eos_id, task.tokenizer.pad_id
    results = []
    for text in texts:
        ids = task.tokenizer.encode(translator.prefix + text)[: translator.max_source_len - 1]
        source_1S = translator._with_eos(ids, text)[0][None]  # cut as ``translate`` cuts
        out = translator.generator.generate(source_1S, task._max_len())[0]
        out = np.concatenate([output_ids(out, eos), [eos]])[: task._max_len()]
        decoder_inputs = np.concatenate([[start], out[:-1]])[None].astype(np.int32)
        _, weights_BTS = task.model.apply(
            {"params": params},
            jnp.asarray(source_1S),
            jnp.asarray(decoder_inputs),
            jnp.ones_like(jnp.asarray(source_1S), bool),
        )
        results.append(
            {
                "source": text,
                "translation": task.tokenizer.decode(out[:-1]),
                "source_tokens": pieces(task.tokenizer, source_1S[0]),
                "target_tokens": pieces(task.tokenizer, out),
                "weights": np.asarray(weights_BTS[0], np.float64),
            }
        )
    return results


def plot_alignment(item: dict, path: str | Path) -> str:
    """Writes one alignment heatmap (targets down, sources across) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weights = item["weights"]
    T, S = weights.shape
    fig, ax = plt.subplots(figsize=(0.45 * S + 2.5, 0.4 * T + 2.0), dpi=100)
    ax.imshow(weights, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(S), item["source_tokens"], rotation=90, fontsize=8)
    ax.set_yticks(range(T), item["target_tokens"], fontsize=8)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    ax.set_title(item["translation"][:80], fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)


def main(argv=None) -> int:
    from nlpjax import api

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--split", default="test_2016")
    parser.add_argument("--num", type=int, default=4, help="sentences (the split's first)")
    parser.add_argument("--out", default=None, help="path prefix (default WORKDIR/alignments)")
    args = parser.parse_args(argv)
    trained = api.load(args.workdir)
    if not hasattr(trained.task, "translator") or not hasattr(trained.task.model, "decode"):
        parser.error(f"the {trained.config.task!r} task is not an encoder-decoder")
    texts = [source for source, _ in trained.task.pairs(args.split)[: args.num]]
    out = Path(args.out or Path(args.workdir) / "alignments")
    out.parent.mkdir(parents=True, exist_ok=True)
    items = alignments(trained.task, trained.params, texts)
    for i, item in enumerate(items):
        print(f"{item['source']}\n  -> {item['translation']}")
        print(f"wrote {plot_alignment(item, f'{out}_{i}.png')}")
    record = [{**item, "weights": item["weights"].round(4).tolist()} for item in items]
    Path(f"{out}.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {out}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
