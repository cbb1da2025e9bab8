"""The full-size stand-ins cut English into as many tokens as the real models do, since a
forward pass costs per token and the benchmarks time them in the real models' place."""

from __future__ import annotations

from transformers import AutoTokenizer

from rag.testing.random_models import _WORDS, english_words, save_bert_tokenizer, save_clip_tokenizer

QUESTION = "Who was the first woman to command a Space Shuttle mission?"


def test_the_full_size_clip_tokenizer_keeps_english_words_whole(tmp_path):
    save_clip_tokenizer(tmp_path / "clip", english_words() + _WORDS)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "clip")
    # openai/clip-vit-base-patch32 cuts this question into the same 12 pieces
    assert tokenizer.tokenize(QUESTION) == ["who</w>", "was</w>", "the</w>", "first</w>", "woman</w>", "to</w>",
                                            "command</w>", "a</w>", "space</w>", "shuttle</w>", "mission</w>", "?</w>"]
    assert len(tokenizer(QUESTION)["input_ids"]) == 14  # with the start and end tokens


def test_the_tiny_clip_tokenizer_is_character_level(tmp_path):
    save_clip_tokenizer(tmp_path / "clip")
    assert AutoTokenizer.from_pretrained(tmp_path / "clip").tokenize("moon") == ["m", "o", "o", "n</w>"]


def test_the_full_size_bert_tokenizer_is_bge_small_s_vocabulary(tmp_path):
    save_bert_tokenizer(tmp_path / "bert", english=True)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "bert")
    assert len(tokenizer) == 30522  # bert-base-uncased's WordPiece, which bge-small-en-v1.5 uses
    instruction = "Represent this sentence for searching relevant passages: "
    assert tokenizer.tokenize(instruction + QUESTION) == [
        "represent", "this", "sentence", "for", "searching", "relevant", "passages", ":",
        "who", "was", "the", "first", "woman", "to", "command", "a", "space", "shuttle", "mission", "?"]
    save_bert_tokenizer(tmp_path / "small")
    assert len(AutoTokenizer.from_pretrained(tmp_path / "small")) < 300
