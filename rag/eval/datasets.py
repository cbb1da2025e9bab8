"""Loaders for labelled retrieval sets: the project's questions.json, BEIR folders, Karpathy splits.

Every loader checks its files and raises `BadInputError` naming the file and what is wrong,
so `rag eval` prints one line instead of a traceback. Relevance labels are keyed
`"text:<key>"` or `"image:<key>"`, where the key is a path relative to the corpus folder
(project format), a BEIR document id, or a Karpathy image file name / caption id.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from rag.errors import BadInputError


@dataclass
class EvalQuery:
    """One labelled query: text and/or an image, and the ids that answer it (with grades)."""

    id: str
    text: str = ""
    image: Optional[str] = None
    relevant: Dict[str, float] = field(default_factory=dict)
    set: str = ""
    kind: str = ""

    def relevant_in(self, modality: str) -> Dict[str, float]:
        """The labels of one modality ("text" or "image")."""
        prefix = f"{modality}:"
        return {k: v for k, v in self.relevant.items() if k.startswith(prefix)}


@dataclass
class LabelledSet:
    """A corpus folder (ingested as `rag ingest` would) and questions labelled against it."""

    name: str
    root: Path
    queries: List[EvalQuery]
    # BEIR: document id of each generated file (key: path relative to root)
    doc_ids: Dict[str, str] = field(default_factory=dict)


@dataclass
class KarpathySet:
    """Images of one split and their captions (usually five each), for CLIP-style retrieval."""

    name: str
    image_dir: Path
    images: List[str]  # file names, in file order
    captions: List[str]  # caption texts
    caption_image: List[int]  # index into `images` of each caption


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{path}: not readable JSON ({exc})") from None


def _jsonl(path: Path) -> Iterator[Dict[str, Any]]:
    if not path.is_file():
        raise BadInputError(f"{path}: no such file")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadInputError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
            if not isinstance(record, dict):
                raise BadInputError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            yield record


# -- the project's format ------------------------------------------------------------


def load_questions(corpus: Path, questions: Optional[Path] = None) -> LabelledSet:
    """`corpus/questions.json` (or `questions`): a list of labelled questions.

    Each item: `question` (text), optional `image` (a query image, relative to the corpus),
    `passages` (article paths) and `images` (image paths) that answer it, optional `id`,
    `set`, `kind`. An item with only `expected_path` counts that article as its passage.
    """
    corpus = Path(corpus)
    path = Path(questions) if questions else corpus / "questions.json"
    data = _read_json(path)
    if not isinstance(data, list):
        raise BadInputError(f"{path}: expected a JSON list of questions, got {type(data).__name__}")
    queries = []
    for number, item in enumerate(data, start=1):
        where = f"{path}: question {number}"
        if not isinstance(item, dict) or not (item.get("question") or item.get("image")):
            raise BadInputError(f"{where}: needs a \"question\" (or an \"image\")")
        passages = item.get("passages")
        if passages is None:
            passages = [item["expected_path"]] if item.get("expected_path") else []
        images = item.get("images") or []
        relevant = {f"text:{p}": 1.0 for p in passages}
        relevant.update({f"image:{p}": 1.0 for p in images})
        missing = [p for p in list(passages) + list(images) if not (corpus / p).is_file()]
        if missing:
            raise BadInputError(f"{where}: labelled files not in {corpus}: {', '.join(missing)}")
        image = item.get("image")
        if image and not (corpus / image).is_file():
            raise BadInputError(f"{where}: query image {image} not in {corpus}")
        queries.append(EvalQuery(
            id=str(item.get("id") or f"q{number}"),
            text=item.get("question") or "",
            image=str(corpus / image) if image else None,
            relevant=relevant,
            set=str(item.get("set") or ""),
            kind=str(item.get("kind") or ""),
        ))
    return LabelledSet(corpus.name, corpus, queries)


# -- BEIR --------------------------------------------------------------------------------


def read_qrels(path: Path) -> Dict[str, Dict[str, float]]:
    """A BEIR qrels TSV (`query-id`, `corpus-id`, `score`; a header row is skipped)."""
    if not path.is_file():
        raise BadInputError(f"{path}: no such file")
    qrels: Dict[str, Dict[str, float]] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            if not row or (number == 1 and row[0].strip().lower() in ("query-id", "query_id", "qid")):
                continue
            if len(row) < 3:
                raise BadInputError(f"{path}:{number}: expected query-id, corpus-id and score, got {row!r}")
            try:
                score = float(row[2])
            except ValueError:
                raise BadInputError(f"{path}:{number}: the score {row[2]!r} is not a number") from None
            qrels.setdefault(row[0], {})[row[1]] = score
    return qrels


def load_beir(folder: Path, split: str = "test", workdir: Optional[Path] = None) -> LabelledSet:
    """A BEIR folder (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`).

    The corpus is written to `workdir` as one Markdown file per document (`# title`, text),
    so it is ingested exactly as a user's files are; only queries with a positive qrel are kept.
    """
    import tempfile

    folder = Path(folder)
    qrels = read_qrels(folder / "qrels" / f"{split}.tsv")
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="rag-beir-"))
    root.mkdir(parents=True, exist_ok=True)
    doc_ids: Dict[str, str] = {}
    for number, doc in enumerate(_jsonl(folder / "corpus.jsonl"), start=1):
        if "_id" not in doc:
            raise BadInputError(f"{folder / 'corpus.jsonl'}:{number}: a document without \"_id\"")
        name = f"doc-{number:07d}.md"
        title = (doc.get("title") or "").strip()
        body = (doc.get("text") or "").strip()
        (root / name).write_text(f"# {title}\n\n{body}\n" if title else f"{body}\n", encoding="utf-8")
        doc_ids[name] = str(doc["_id"])
    known = set(doc_ids.values())
    queries = []
    for record in _jsonl(folder / "queries.jsonl"):
        qid = str(record.get("_id", ""))
        labels = {f"text:{d}": s for d, s in qrels.get(qid, {}).items() if s > 0 and d in known}
        if labels:
            queries.append(EvalQuery(id=qid, text=str(record.get("text") or ""), relevant=labels, set=split))
    if not queries:
        raise BadInputError(f"{folder}: no query of queries.jsonl has a relevant document in qrels/{split}.tsv")
    return LabelledSet(folder.name, root, queries, doc_ids)


# -- Karpathy splits (Flickr30k, COCO) ---------------------------------------------------


def load_karpathy(json_path: Path, image_dir: Optional[Path] = None, split: str = "test",
                  limit: Optional[int] = None) -> KarpathySet:
    """`dataset_flickr30k.json` / `dataset_coco.json` (Karpathy's splits) and its image folder.

    Takes the images of `split` (Flickr30k's 1K test set is `test`), with their sentences'
    `raw` text; `image_dir` defaults to an `images/` folder beside the JSON file.
    """
    json_path = Path(json_path)
    data = _read_json(json_path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise BadInputError(f"{json_path}: expected Karpathy's format, an object with an \"images\" list")
    image_dir = Path(image_dir) if image_dir else json_path.parent / "images"
    images: List[str] = []
    captions: List[str] = []
    owner: List[int] = []
    for number, item in enumerate(data["images"], start=1):
        if item.get("split") != split:
            continue
        name = item.get("filename")
        if not name:
            raise BadInputError(f"{json_path}: image {number} has no \"filename\"")
        rel = Path(item.get("filepath") or "") / name
        path = image_dir / rel if (image_dir / rel).is_file() else image_dir / name
        if not path.is_file():
            raise BadInputError(f"{json_path}: image {name} is not in {image_dir}")
        sentences = [s.get("raw") or " ".join(s.get("tokens", [])) for s in item.get("sentences", [])]
        sentences = [s.strip() for s in sentences if s and s.strip()]
        if not sentences:
            raise BadInputError(f"{json_path}: image {name} has no sentences")
        images.append(str(path.relative_to(image_dir)))
        for sentence in sentences:
            captions.append(sentence)
            owner.append(len(images) - 1)
        if limit and len(images) >= limit:
            break
    if not images:
        raise BadInputError(f"{json_path}: no image in split {split!r}")
    return KarpathySet(json_path.stem, image_dir, images, captions, owner)
