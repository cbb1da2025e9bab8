"""Signal plumbing (pure): an image's words, the article link, one list across modalities."""

from __future__ import annotations

import pytest

from rag.search.fusion import Fused
from rag.corpus.words import image_words
from rag.search.signals import FusionSettings, article_ranking, fuse_all, fuse_modality


def test_image_words_gathers_title_caption_and_file_name():
    meta = {"title": "Eileen Collins", "caption": "NASA portrait of astronaut Eileen Collins.",
            "file_path": "/data/images/eileen-collins_portrait-1.jpg"}
    assert image_words(meta) == "Eileen Collins. NASA portrait of astronaut Eileen Collins. eileen collins portrait 1"
    assert image_words({"title": "x"}, "/a/DSC_0001.JPG") == "x. DSC 0001"
    assert image_words({}, "/a/12345.jpg") == ""  # a number says nothing
    assert image_words({"title": "moon", "alt": "moon"}, "/a/moon.png") == "moon"


def test_article_ranking_follows_the_best_passage():
    text = [("t1", 0.9), ("t2", 0.8), ("t3", 0.7)]
    text_article = {"t1": "cat", "t2": "moon", "t3": "cat"}
    images = {"i-moon": "moon", "i-cat": "cat", "i-cat2": "cat", "i-horse": "horse", "i-none": None}
    assert article_ranking(text, text_article, images) == [("i-cat", 0.9), ("i-cat2", 0.9), ("i-moon", 0.8)]


def test_settings_select_signals():
    s = FusionSettings().without("clip", "article")
    assert s.signals == ("dense", "bm25", "clip_image", "words", "words_bm25")
    with pytest.raises(ValueError, match="unknown signals colour"):
        FusionSettings().using("dense", "colour")
    legs = {"dense": [("a", 0.9), ("b", 0.1)], "bm25": [("b", 5.0)]}
    assert [f.id for f in fuse_modality(legs, FusionSettings().using("dense"))] == ["a", "b"]


def test_fuse_all_ranks_across_modalities_and_keeps_signals():
    text = [Fused("t1", 1.5, {"dense": {"rank": 1, "score": 0.7}}), Fused("t2", 1.0), Fused("t3", 0.2)]
    images = [Fused("i1", 1.4, {"words": {"rank": 1, "score": 0.5}}), Fused("i2", 0.1)]
    ranking = fuse_all(text, images, FusionSettings(image_weight=1.0), limit=5)
    ids = [item.id for item in ranking.items]
    assert ids[0] == ("text", "t1") and ids[1] == ("image", "i1")
    assert ranking.items[0].signals == {"dense": {"rank": 1, "score": 0.7}}
    assert ranking.items[1].signals == {"words": {"rank": 1, "score": 0.5}}
    # an image is kept in a top 2 only when asked for
    top2 = fuse_all(text, images, FusionSettings(image_weight=0.1), limit=2)
    assert [i.id for i in top2.items] == [("text", "t1"), ("text", "t2")]
    top2 = fuse_all(text, images, FusionSettings(image_weight=0.1), limit=2, min_images=1)
    assert [i.id for i in top2.items] == [("text", "t1"), ("image", "i1")]
    assert [i.id for i in fuse_all(text, [], FusionSettings(), limit=2).items] == [("text", "t1"), ("text", "t2")]


def test_signal_store_bm25_and_words_legs(tmp_path):
    from rag.stores.signals import SignalPoint, SignalStore

    text = SignalStore(tmp_path / "text", "text")
    assert not text.exists() and text.count() == 0 and text.query("anything") == {}
    text.add([
        SignalPoint("n1", "d1", {"title": "Moon", "url": "u/moon"}, "Moon\n\nThe Moon raises the tides."),
        SignalPoint("n2", "d2", {"title": "Coffee", "url": "u/coffee"}, "Coffee\n\nEspresso needs nine bars of pressure."),
    ])
    legs = text.query("what causes the tides?", limit=5)
    assert [node for node, _ in legs["bm25"]] == ["n1"]
    assert text.query("the of and") == {}  # only stop words: no lexical leg
    text.delete_documents(["d1"])
    assert text.count() == 1
    text.close()
    reopened = SignalStore(tmp_path / "text", "text")
    assert reopened.exists() and reopened.count() == 1
    assert [n for n, _ in reopened.query("espresso pressure")["bm25"]] == ["n2"]
    reopened.close()

    image = SignalStore(tmp_path / "image", "image")
    image.add([
        SignalPoint("i1", "d3", {"title": "Moon", "url": "u/moon"}, "Moon. Craters", [1.0, 0.0]),
        SignalPoint("i2", "d4", {"title": "Coffee", "url": "u/coffee"}, "Coffee. A cup of espresso", [0.0, 1.0]),
    ])
    legs = image.query("espresso cup", [0.1, 0.9], limit=5)
    assert [n for n, _ in legs["words"]] == ["i2", "i1"] and [n for n, _ in legs["bm25"]] == ["i2"]
    assert image.ids_of_articles(["u/moon"]) == {"i1": "u/moon"}
    with pytest.raises(ValueError, match="image node i3 has no words vector"):
        image.add([SignalPoint("i3", "d5", {}, "x")])
    image.close()
