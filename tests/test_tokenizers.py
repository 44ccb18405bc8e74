"""Tokenizers: byte, word (counts kept), SentencePiece with special ids; saving, restoring
and refusing a vocabulary that does not match the checkpoint or the config."""

import dataclasses
import gzip
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from nlpjax.data import pipeline
from nlpjax.data.tokenizers import (
    ByteTokenizer,
    CharTokenizer,
    TokenizerConfig,
    VocabularyMismatchError,
    build_tokenizer,
    check_config,
    fingerprint,
    load_tokenizer,
    restore_or_build,
    save_tokenizer,
)
from nlpjax.data.word_tokenizer import WordTokenizer


@pytest.fixture(scope="module")
def english_lines():
    path = Path(os.environ["NLPJAX_DATA_DIR"]) / "multi30k" / "train.en.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [next(f).rstrip("\n") for _ in range(3000)]


def test_byte_tokenizer_layout_and_round_trip():
    tok = ByteTokenizer(num_registers=2, num_sentinels=3)
    text = "naïve café ☃"
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and len(ids) == len(text.encode("utf-8"))
    assert ids.min() >= 4 and ids.max() < 260 and tok.decode(ids) == text
    assert (tok.pad_id, tok.eos_id, tok.unk_id, tok.bos_id) == (0, 1, 2, 3)
    assert (tok.pause_id, tok.sink_id, tok.register_ids) == (260, 261, [262, 263])
    assert [tok.sentinel_id(i) for i in range(3)] == [266, 265, 264] and tok.vocab_size == 267
    assert tok.decode([*tok.encode("hi"), tok.pause_id, tok.sentinel_id(0), 1, 0]) == (
        "hi<pause><extra_id_0></s>"
    )


def test_word_vocabulary_min_count_max_size_unk_and_counts():
    texts = ["the cat sat on the mat", "the dog sat", "a cat"]
    tok = WordTokenizer.from_texts(texts, min_count=2, num_registers=0)
    assert tok.words == ["the", "cat", "sat"] and tok.counts == [3, 2, 2]
    assert tok.unk_count == 4  # on, mat, dog, a: every dropped occurrence
    np.testing.assert_array_equal(tok.encode("the dog sat"), [4, 2, 6])
    assert tok.decode(tok.encode("the dog sat")) == "the <unk> sat"
    counts = tok.counts_array()
    assert counts.shape == (tok.vocab_size,) and counts.sum() == 11
    assert counts[2] == 4 and counts[4:7].tolist() == [3, 2, 2]
    capped = WordTokenizer.from_texts(texts, max_size=2)
    assert capped.words == ["the", "cat"] and capped.unk_count == 11 - 5
    assert capped.count_unknown("the cow sat") == (3, 2)
    lower = WordTokenizer.from_texts(["The the THE"], lowercase=True)
    assert lower.words == ["the"] and lower.counts == [3]
    with pytest.raises(ValueError, match="empty word vocabulary"):
        WordTokenizer.from_texts(["a b"], min_count=2)


def test_word_lines_encode_at_once_as_one_by_one():
    tok = WordTokenizer.from_texts(["The cat sat", "the dog"], lowercase=True)
    lines = ["the CAT sat  on", "", "a dog", "\tthe\n"]
    ids, lengths = tok.encode_lines(lines)
    assert ids.dtype == np.int32 and lengths.tolist() == [4, 0, 2, 1]
    np.testing.assert_array_equal(ids, np.concatenate([tok.encode(line) for line in lines]))
    assert tok.encode_lines([])[0].shape == (0,)


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_trained_from_a_split(english_lines, model_type, tmp_path):
    cfg = TokenizerConfig(
        kind="sentencepiece", vocab_size=400, model_type=model_type, num_sentinels=100
    )
    tok = build_tokenizer(cfg, english_lines)
    assert tok.num_pieces == 400
    assert tok.vocab_size == 400 + 2 + 4 + 100
    assert tok.sentinel_id(0) == tok.vocab_size - 1 and tok.sentinel_id(99) == 406
    assert (tok.pause_id, tok.sink_id, tok.register_ids) == (400, 401, [402, 403, 404, 405])
    assert [tok._sp.id_to_piece(i) for i in range(4)] == ["<pad>", "</s>", "<unk>", "<s>"]
    text = "A man in a blue shirt is standing on a ladder."
    ids = tok.encode(text)
    assert ids.max() < 400 and tok.decode(ids) == text
    assert tok.decode([*ids[:2], tok.sentinel_id(1), tok.eos_id]).endswith("<extra_id_1></s>")
    save_tokenizer(tok, tmp_path / "tok.json")
    restored = load_tokenizer(tmp_path / "tok.json")
    assert restored == tok and fingerprint(restored) == fingerprint(tok)
    np.testing.assert_array_equal(restored.encode(text), ids)


def test_saved_tokenizers_round_trip(tmp_path):
    for tok in (
        CharTokenizer.from_text("abc"),
        ByteTokenizer(1, 2),
        WordTokenizer.from_text("a b a"),
    ):
        save_tokenizer(tok, tmp_path / "t.json")
        back = load_tokenizer(tmp_path / "t.json")
        assert back == tok and fingerprint(back) == fingerprint(tok)
    assert fingerprint(WordTokenizer.from_text("a b")) != fingerprint(
        WordTokenizer.from_text("a c")
    )


def test_checkpoint_with_another_vocabulary_is_refused(tmp_path):
    path = tmp_path / "tokenizer.json"
    original = CharTokenizer.from_text("abcdefgh")
    ds = pipeline.lm_windows(np.arange(100, dtype=np.int32) % 8, 5, 2, seed=0)
    it = pipeline.iterator(ds, vocabulary=original, vocab_file=str(path))
    next(it)
    state = json.loads(json.dumps(it.get_state()))  # what the checkpoint stores
    assert state["vocabulary"]["fingerprint"] == fingerprint(original)

    same = pipeline.iterator(
        ds, vocabulary=CharTokenizer.from_text("hgfedcba"), vocab_file=str(path)
    )
    same.set_state(state)  # equal vocabulary: accepted
    other = CharTokenizer.from_text("abcdefgX")
    resumed = pipeline.iterator(ds, vocabulary=other, vocab_file=str(path))
    with pytest.raises(VocabularyMismatchError, match=str(path)) as err:
        resumed.set_state(state)
    assert fingerprint(original) in str(err.value) and "8 tokens" in str(err.value)
    save_tokenizer(other, path)
    with pytest.raises(VocabularyMismatchError, match="tokenizer.json"):
        load_tokenizer(path, expected_fingerprint=fingerprint(original))


def test_lm_task_resume_checks_the_workdir_vocabulary(tiny_config, tmp_path):
    from nlpjax.tasks.lm import LMTask

    task = LMTask(tiny_config(), tmp_path)
    task.save_assets(tmp_path)
    it = task.train_iterator()
    next(it)
    state = it.get_state()
    save_tokenizer(CharTokenizer(task.tokenizer.chars[::-1]), tmp_path / "tokenizer.json")
    resumed = LMTask(tiny_config(), tmp_path).train_iterator()
    with pytest.raises(VocabularyMismatchError, match=str(tmp_path / "tokenizer.json")):
        resumed.set_state(state)


def test_saved_tokenizer_must_match_the_config(tmp_path):
    path = tmp_path / "tokenizer.json"
    cfg = TokenizerConfig(kind="word", min_count=1)
    tok = restore_or_build(path, cfg, lambda: ["a b c"])
    save_tokenizer(tok, path)

    def no_texts():
        raise AssertionError("a saved tokenizer must not be rebuilt")

    assert restore_or_build(path, cfg, no_texts) == tok
    with pytest.raises(VocabularyMismatchError, match=r"tokenizer.json.*min_count"):
        restore_or_build(path, TokenizerConfig(kind="word", min_count=5), no_texts)
    with pytest.raises(VocabularyMismatchError, match="kind: file has 'word'"):
        restore_or_build(path, TokenizerConfig(kind="byte"), no_texts)
    with pytest.raises(ValueError, match="tokenizer kind"):
        TokenizerConfig(kind="wordpiece")


def test_unreadable_tokenizer_file_names_the_file(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer.json: not a readable tokenizer file"):
        load_tokenizer(bad)


# -- the tokenizer as a config section (data.tokenizer) ------------------------------------


def _small_corpus(tmp_path):
    lines = [f"line {i} of a small corpus about cats and dogs" for i in range(60)]
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "valid.txt").write_text("cats and dogs\n")
    return f"files:{tmp_path / 'train.txt'};validation={tmp_path / 'valid.txt'}"


def test_lm_config_builds_a_sentencepiece_tokenizer_and_records_what_was_built(
    tiny_config, tmp_path
):
    from nlpjax.tasks.lm import LMTask

    config = tiny_config(
        data__dataset=_small_corpus(tmp_path),
        data__tokenizer__kind="sentencepiece",
        data__tokenizer__vocab_size=500,
        data__tokenizer__num_registers=2,
    )
    task = LMTask(config, tmp_path)
    tok = task.tokenizer
    assert tok.kind == "sentencepiece" and tok.extra.num_registers == 2
    assert tok.num_pieces < 500  # a tiny corpus cannot give 500 pieces
    assert task.config.model.vocab_size == tok.vocab_size
    task.save_assets(tmp_path)
    saved = json.loads((tmp_path / "tokenizer.json").read_text())
    assert saved["vocab_size"] == tok.vocab_size == tok.num_pieces + 2 + 2
    assert saved["num_pieces"] == tok.num_pieces and saved["requested_vocab_size"] == 500
    # The same config resumes with the saved tokenizer; another vocab_size is refused.
    assert LMTask(config, tmp_path).tokenizer == tok
    other = dataclasses.replace(
        config,
        data=dataclasses.replace(
            config.data, tokenizer=dataclasses.replace(config.data.tokenizer, vocab_size=600)
        ),
    )
    with pytest.raises(VocabularyMismatchError, match="vocab_size: file has 500, config has 600"):
        LMTask(other, tmp_path)


def test_sentencepiece_file_of_the_earlier_layout_keeps_its_fingerprint(tmp_path):
    tok = build_tokenizer(
        TokenizerConfig(kind="sentencepiece", vocab_size=300), ["the cat sat on the mat"] * 50
    )
    old_layout = {k: v for k, v in tok.to_dict().items() if k not in ("num_pieces",)}
    old_layout["vocab_size"] = old_layout.pop("requested_vocab_size")  # the request, as before
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(old_layout))
    # The fingerprint of the earlier saved form: what checkpoints written before recorded.
    old_fingerprint = hashlib.sha256(
        json.dumps(old_layout, sort_keys=True, ensure_ascii=False).encode("utf-8")
    ).hexdigest()[:16]
    loaded = load_tokenizer(path, expected_fingerprint=old_fingerprint)
    assert loaded == tok and fingerprint(tok) == old_fingerprint
    check_config(loaded, TokenizerConfig(kind="sentencepiece", vocab_size=300), str(path))


def test_changed_tokenizer_on_resume_is_exit_2_and_keeps_the_workdir(tmp_path, capsys):
    from nlpjax import cli
    from nlpjax.api import load_config
    from nlpjax.tasks.lm import LMTask
    from tests.conftest import TINY

    workdir = tmp_path / "w"
    workdir.mkdir()
    LMTask(load_config(TINY), workdir).save_assets(workdir)  # what a char run leaves
    (workdir / "config.json").write_text(load_config(TINY).to_json())
    saved = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    args = ["train", f"--config={TINY}", f"--workdir={workdir}"]
    code = cli.main([*args, "--config.data.tokenizer.kind=byte"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"error: {workdir / 'tokenizer.json'}") and err.count("\n") == 1
    assert "kind: file has 'char', config has 'byte'" in err
    assert {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()} == saved


def test_config_json_with_a_tokenizer_string_reads_as_its_kind():
    from nlpjax.api import load_config
    from nlpjax.config import from_json
    from nlpjax.tasks.registry import TASKS
    from tests.conftest import TINY

    config = load_config(TINY)
    tree = json.loads(config.to_json())
    assert tree["data"]["tokenizer"]["kind"] == "char"
    tree["data"]["tokenizer"] = "char"  # what config.json held before the section existed
    assert from_json(json.dumps(tree), TASKS) == config
