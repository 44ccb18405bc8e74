"""Recurrent encoder-decoder with attention on a parallel corpus (Multi30k German -> English).

The model is ``nlpjax.models.rnn_seq2seq.RNNSeq2Seq`` (LSTM/GRU encoder, optionally
bidirectional; decoder with Luong ``dot`` or Bahdanau ``additive`` attention). Everything
else is the T5 task's (``nlpjax.tasks.seq2seq.Seq2SeqTask``): the corpus, the tokenizer,
the evaluation (loss, then sacrebleu BLEU and chrF of ``data.bleu_examples`` translations)
and the decoding (``nlpjax.inference.seq2seq``, whose greedy, sampling and beam searches
call this model's one-token step). Two things differ: each batch row holds one padded pair
(a recurrent encoder reads one sequence per row; ``seq2seq_pipeline.padded_batches``), and
evaluation decodes with ``data.beam_size`` (1: greedy).
"""

import dataclasses

import grain

from nlpjax.data import seq2seq_pipeline
from nlpjax.errors import ConfigError
from nlpjax.models.rnn import GATES, RNNConfig
from nlpjax.models.rnn_seq2seq import RNNSeq2Seq, search_cache, search_step
from nlpjax.tasks.seq2seq import Seq2SeqDataConfig, Seq2SeqTask


@dataclasses.dataclass(frozen=True)
class RNNSeq2SeqDataConfig(Seq2SeqDataConfig):
    """The T5 task's data section, without a task prefix by default, and ``eval_length``.

    ``source_length``/``target_length`` are the training rows' widths. A recurrent model
    has no position limit, so the translations of evaluation read sources of up to
    ``max(eval_length, source_length)`` tokens and decode up to ``max(eval_length,
    target_length)``, end id included (``nlpjax generate``: the same sources, outputs up
    to ``--max_new_tokens``); the evaluation loss keeps the training widths. Cutting
    test sentences to the training widths costs BLEU: 34 of Multi30k's 1000 test_2016
    sources and 21 of its references are over 32 tokens.
    """

    prefix: str = ""
    eval_length: int = 0

    def __post_init__(self):
        super().__post_init__()
        if self.eval_length < 0:
            raise ConfigError(
                f"data.eval_length must be >= 0 (0: data.source_length and "
                f"data.target_length), got {self.eval_length}"
            )


def rnn_search_start(model: RNNSeq2Seq, params, source_BS, pad_id: int, width: int):
    """The ``Seq2SeqGenerator`` hook: the source encoded once (padding masked), the
    decoder's start state repeated ``width`` times, and the model's one-token step."""
    variables = {"params": params}
    cache = search_cache(model, variables, source_BS, source_BS != pad_id, width)
    return search_step(model, variables), cache


class RNNSeq2SeqTask(Seq2SeqTask):
    """LSTM/GRU encoder-decoder with attention (see ``nlpjax.tasks.base.Task``)."""

    model_config_cls = RNNConfig
    data_config_cls = RNNSeq2SeqDataConfig
    model_cls = RNNSeq2Seq

    def __init__(self, config, workdir=None):
        if config.model.target_vocab_size:
            raise ConfigError(
                "model.target_vocab_size must be 0 for rnn_seq2seq: source and target share "
                "the data.tokenizer vocabulary"
            )
        super().__init__(config, workdir)

    def batch_rows(self, examples: grain.MapDataset, batch_size: int, seed: int):
        """One pair per row, padded to (data.source_length, data.target_length)."""
        data = self.config.data
        return seq2seq_pipeline.padded_batches(
            examples,
            source_length=data.source_length,
            target_length=data.target_length,
            batch_size=batch_size,
            start_id=self.tokenizer.pad_id,
        )

    def logits(self, params, batch, rngs, train: bool):
        logits_BTV, _ = self.model.apply(
            {"params": params},
            batch["inputs"],
            batch["decoder_inputs"],
            batch["inputs_mask"],
            train=train,
            rngs=rngs,
        )
        return logits_BTV

    def _max_len(self) -> int:
        data = self.config.data
        return max(data.target_length, data.eval_length)

    def _max_source_len(self) -> int:
        data = self.config.data
        return max(data.source_length, data.eval_length)

    def flops_per_token(self) -> float:
        """6 x the matmul parameters a token goes through, averaged over the S + T tokens
        of a row: a source token the encoder stack and the attention key projection, a
        target token the decoder stack (with input feeding, the feed kernel too), the
        combine layer and the output layer."""
        m, data = self.config.model, self.config.data
        gates = GATES[m.cell] * m.d_hidden

        def stack(dirs: int) -> int:
            return dirs * sum(
                (m.embed_dim if i == 0 else m.d_hidden * dirs) * gates + m.d_hidden * gates
                for i in range(m.num_layers)
            )

        source = stack(2 if m.bidirectional else 1) + m.output_dim * m.d_hidden
        target = stack(1) + (m.output_dim + m.d_hidden) * m.d_hidden + m.d_hidden * m.vocab_size
        if m.input_feeding:
            target += m.d_hidden * gates
        S, T = data.source_length, data.target_length
        return 6.0 * (S * source + T * target) / (S + T)

    def generator_options(self) -> dict:
        return {"search_start": rnn_search_start, "max_target_len": 0}
