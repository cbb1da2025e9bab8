"""Evaluation: metrics by hand, the three loaders, the runner, and Karpathy R@K on a synthetic split."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from rag.errors import BadInputError
from rag.eval.datasets import EvalQuery, LabelledSet, load_beir, load_karpathy, load_questions, read_qrels
from rag.eval.metrics import dedupe, mean_scores, mrr_at, ndcg_at, recall_at, score_query, success_at
from rag.eval.runner import evaluate, evaluate_karpathy, hit_key, karpathy_recalls

SAMPLE = Path(__file__).resolve().parent.parent / "rag" / "sample"


# -- metrics -----------------------------------------------------------------------------


def test_metrics_by_hand():
    ranking = ["a", "x", "b", "x", "y", "c"]
    relevant = {"a": 1, "b": 1, "c": 1, "d": 1}
    assert dedupe(ranking) == ["a", "x", "b", "y", "c"]
    assert recall_at(ranking, relevant, 1) == 0.25
    assert recall_at(ranking, relevant, 3) == 0.5  # a, x, b
    assert recall_at(ranking, relevant, 5) == 0.75  # the repeated x does not take a place
    assert success_at(ranking, relevant, 1) == 1.0
    assert success_at(["x", "a"], relevant, 1) == 0.0
    assert mrr_at(["x", "y", "b"], relevant) == pytest.approx(1 / 3)
    assert mrr_at(["x"] * 3 + list("pqrstuvwz") + ["a"], relevant, 10) == 0.0  # a is 11th after dedupe
    # nDCG: gains at ranks 1 and 3 over the ideal 4 relevant at ranks 1-4
    dcg = 1 + 1 / math.log2(4)
    idcg = sum(1 / math.log2(r + 1) for r in range(1, 5))
    assert ndcg_at(["a", "x", "b"], relevant) == pytest.approx(dcg / idcg)
    assert ndcg_at(["a"], {"a": 2, "b": 1}) == pytest.approx(2 / (2 + 1 / math.log2(3)))
    assert recall_at(["a"], {}, 5) == 0.0 and ndcg_at(["a"], {"a": 0}) == 0.0
    scores = score_query(["x", "a"], {"a": 1}, ks=(1, 5))
    assert scores == {"R@1": 0.0, "S@1": 0.0, "R@5": 1.0, "S@5": 1.0, "MRR@10": 0.5,
                      "nDCG@10": pytest.approx(1 / math.log2(3))}
    assert mean_scores([{"m": 1.0}, {"m": 0.0}]) == {"m": 0.5} and mean_scores([]) == {}


# -- the project's questions -------------------------------------------------------------


def test_sample_questions_are_labelled():
    data = load_questions(SAMPLE)
    sets = {}
    for q in data.queries:
        sets.setdefault(q.set, []).append(q)
        assert q.relevant, q.id
    assert len(sets["basic"]) == 14 and len(sets["hard"]) >= 20
    assert all(q.relevant_in("image") for q in sets["basic"])
    kinds = {q.kind for q in sets["hard"]}
    assert kinds == {"paraphrase", "name", "caption", "both"}
    for q in sets["hard"]:
        if q.kind == "caption":
            assert not q.relevant_in("text") and len(q.relevant_in("image")) == 1, q.id
        if q.kind == "both":
            assert q.relevant_in("text") and q.relevant_in("image"), q.id
    assert len({q.id for q in data.queries}) == len(data.queries)
    cat = next(q for q in data.queries if q.id == "b01")
    assert cat.relevant == {"text:domestic-cat.md": 1.0, "image:images/domestic-cat-1.jpg": 1.0}


def test_question_files_are_checked(tmp_path):
    (tmp_path / "a.md").write_text("# A\n\ntext\n")
    (tmp_path / "q.json").write_text(json.dumps([{"question": "q?", "passages": ["a.md", "b.md"]}]))
    with pytest.raises(BadInputError, match=r"q.json: question 1: labelled files not in .*: b.md$"):
        load_questions(tmp_path, tmp_path / "q.json")
    (tmp_path / "q.json").write_text(json.dumps([{"passages": ["a.md"]}]))
    with pytest.raises(BadInputError, match=r"question 1: needs a \"question\""):
        load_questions(tmp_path, tmp_path / "q.json")
    (tmp_path / "q.json").write_text("{")
    with pytest.raises(BadInputError, match="not readable JSON"):
        load_questions(tmp_path, tmp_path / "q.json")
    with pytest.raises(BadInputError, match="questions.json: no such file"):
        load_questions(tmp_path)
    (tmp_path / "q.json").write_text(json.dumps([{"question": "q?", "expected_path": "a.md"}]))
    assert load_questions(tmp_path, tmp_path / "q.json").queries[0].relevant == {"text:a.md": 1.0}


# -- BEIR --------------------------------------------------------------------------------


def _beir(folder: Path) -> Path:
    (folder / "qrels").mkdir(parents=True)
    docs = [{"_id": "d1", "title": "Cats", "text": "Cats purr."}, {"_id": "d2", "title": "", "text": "Rockets fly."}]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    queries = [{"_id": "q1", "text": "purring"}, {"_id": "q2", "text": "unlabelled"}, {"_id": "q3", "text": "fly"}]
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq3\td2\t2\nq3\td1\t0\n")
    return folder


def test_beir_folder(tmp_path):
    data = load_beir(_beir(tmp_path / "beir"), workdir=tmp_path / "docs")
    assert [(q.id, q.relevant) for q in data.queries] == [("q1", {"text:d1": 1.0}), ("q3", {"text:d2": 2.0})]
    assert data.doc_ids == {"doc-0000001.md": "d1", "doc-0000002.md": "d2"}
    assert (tmp_path / "docs" / "doc-0000001.md").read_text() == "# Cats\n\nCats purr.\n"
    assert (tmp_path / "docs" / "doc-0000002.md").read_text() == "Rockets fly.\n"
    hit = SimpleNamespace(modality="text", file=str(tmp_path / "docs" / "doc-0000002.md"), image_path=None, source="")
    assert hit_key(hit, data.root, data.doc_ids) == "text:d2"


def test_beir_errors(tmp_path):
    folder = _beir(tmp_path / "beir")
    (folder / "qrels" / "test.tsv").write_text("q1\td1\tyes\n")
    with pytest.raises(BadInputError, match=r"test.tsv:1: the score 'yes' is not a number"):
        read_qrels(folder / "qrels" / "test.tsv")
    with pytest.raises(BadInputError, match=r"qrels/dev.tsv: no such file"):
        load_beir(folder, split="dev")
    (folder / "qrels" / "test.tsv").write_text("q9\td1\t1\n")
    with pytest.raises(BadInputError, match=r"no query of queries.jsonl has a relevant document in qrels/test.tsv"):
        load_beir(folder, workdir=tmp_path / "docs")
    (folder / "corpus.jsonl").write_text('{"_id": "d1"}\n[1]\n')
    with pytest.raises(BadInputError, match=r"corpus.jsonl:2: expected a JSON object, got list"):
        load_beir(folder, workdir=tmp_path / "docs2")


# -- the runner --------------------------------------------------------------------------


def test_evaluate_scores_each_view(tmp_path):
    root = tmp_path / "corpus"
    queries = [
        EvalQuery("q1", "cat?", relevant={"text:cat.md": 1, "image:images/cat.jpg": 1}, set="basic"),
        EvalQuery("q2", "caption?", relevant={"image:images/dog.jpg": 1}, set="hard", kind="caption"),
    ]
    data = LabelledSet("t", root, queries)

    def hit(modality, rel):
        return SimpleNamespace(modality=modality, file=str(root / rel), image_path=None, source="")

    answers = {
        "q1": [hit("text", "dog.md"), hit("text", "cat.md"), hit("text", "cat.md"), hit("image", "images/cat.jpg")],
        "q2": [hit("text", "dog.md"), hit("image", "images/cat.jpg"), hit("image", "images/dog.jpg")],
    }
    [result] = evaluate(data, {"fake": lambda q, depth: answers[q.id]}, ks=(1, 3))
    q1, q2 = result.queries
    assert q1.ranking == ["text:dog.md", "text:cat.md", "text:cat.md", "image:images/cat.jpg"]
    assert q1.first_rank == {"fused": 2, "text": 2, "image": 1}
    assert q2.first_rank == {"fused": 3, "image": 2}  # no relevant passage: no text view
    # fused, all: q1 R@3 = 2 of 2 (dog, cat, image after the repeat); q2 R@3 = 1
    assert result.means["all"]["fused"]["R@3"] == 1.0
    assert result.means["all"]["fused"]["MRR@10"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert result.means["all"]["image"]["R@1"] == 0.5
    assert result.counts["all"] == {"fused": 2, "text": 1, "image": 2}
    assert result.counts["hard/caption"] == {"fused": 1, "image": 1}


# -- Karpathy ----------------------------------------------------------------------------

# Twelve images, two captions each. A caption row gives its true image the score `t` and
# each image of `D` (its distractors) 0.9; every other image 0. Images are one-hot vectors.
CAPTIONS = {
    **{f"{i}{s}": (1.0, [10] if i < 5 else []) for i in range(8) for s in "ab"},
    "8a": (0.5, [0, 1]), "8b": (1.0, [9]),
    "9a": (0.5, [0, 1, 2, 3, 4]), "9b": (0.5, [0, 1, 2, 3, 4]),
    "10a": (0.5, list(range(10))), "10b": (0.5, list(range(10))),
    "11a": (1.0, [9]), "11b": (0.5, [0, 1, 2]),
}
# text -> image, rank of the true image: 1 for the 16 captions of images 0-7 (t = 1.0 beats any
# 0.9), 8a: 3, 8b: 1, 9a: 6, 9b: 6, 10a: 11, 10b: 11, 11a: 1, 11b: 4.
# R@1 = 18/24, R@5 = 20/24 (+8a, 11b), R@10 = 22/24 (+9a, 9b).
# image -> text, rank of the best own caption among the column's scores:
# images 0-8 and 11 own a caption scoring 1.0: rank 1. Image 9 owns two 0.5s under the 0.9s
# of 8b, 10a, 10b and 11a: rank 5. Image 10 owns two 0.5s under the 0.9s of the ten captions
# of images 0-4: rank 11. R@1 = 10/12, R@5 = 11/12, R@10 = 11/12.
EXPECTED = {"text->image": {"R@1": 18 / 24, "R@5": 20 / 24, "R@10": 22 / 24},
            "image->text": {"R@1": 10 / 12, "R@5": 11 / 12, "R@10": 11 / 12}}


class TableModel:
    """Images: one-hot by file name; captions: the row above, padded to norm 3 in a 13th slot."""

    def get_image_embedding_batch(self, paths):
        out = []
        for path in paths:
            vector = [0.0] * 13
            vector[int(Path(path).stem.split("-")[1])] = 1.0
            out.append(vector)
        return out

    def get_text_embedding_batch(self, texts):
        out = []
        for text in texts:
            true_score, distractors = CAPTIONS[text.split()[1]]
            image = int(text.split()[1][:-1])
            vector = [0.0] * 13
            vector[image] = true_score
            for d in distractors:
                vector[d] = 0.9
            vector[12] = math.sqrt(9 - sum(x * x for x in vector))
            out.append(vector)
        return out


def _karpathy(folder: Path) -> Path:
    from PIL import Image

    (folder / "images").mkdir(parents=True)
    images = []
    for i in range(12):
        name = f"img-{i}.png"
        Image.new("RGB", (4, 4), (i * 20, 0, 0)).save(folder / "images" / name)
        sentences = [{"raw": f"caption {i}{s}", "tokens": ["caption", f"{i}{s}"]} for s in "ab"]
        images.append({"filename": name, "split": "test", "sentences": sentences})
    images.append({"filename": "train-only.png", "split": "train", "sentences": [{"raw": "unused"}]})
    path = folder / "dataset_flickr30k.json"
    path.write_text(json.dumps({"dataset": "flickr30k", "images": images}))
    return path


def test_karpathy_recalls_by_hand(tmp_path):
    data = load_karpathy(_karpathy(tmp_path))
    assert len(data.images) == 12 and len(data.captions) == 24 and data.caption_image[:3] == [0, 0, 1]
    got = evaluate_karpathy(data, TableModel(), batch_size=5)
    for direction, expected in EXPECTED.items():
        assert got[direction] == pytest.approx(expected), direction
    assert (got["images"], got["captions"]) == (12, 24)


def test_karpathy_recalls_count_ties_in_favour():
    # equal scores do not push the true item down (strictly higher scores only)
    got = karpathy_recalls([[1.0, 1.0], [0.0, 1.0]], [0, 1], ks=(1,))
    assert got == {"text->image": {"R@1": 1.0}, "image->text": {"R@1": 1.0}}


def test_karpathy_errors(tmp_path):
    path = _karpathy(tmp_path)
    (tmp_path / "images" / "img-3.png").unlink()
    with pytest.raises(BadInputError, match=r"image img-3.png is not in .*images$"):
        load_karpathy(path)
    with pytest.raises(BadInputError, match=r"no image in split 'val'"):
        load_karpathy(path, split="val")
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(BadInputError, match=r"expected Karpathy's format"):
        load_karpathy(path)
