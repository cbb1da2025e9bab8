"""Finding files and reading text: what is ingested, skipped (with why) and ignored."""

from __future__ import annotations

import json

import pytest

from rag.corpus.files import decode_text, scan_paths, title_and_body
from rag.corpus.manifest import find_manifests, parse_manifest_lines
from rag.errors import BadInputError


def test_non_utf8_text_names_the_byte():
    with pytest.raises(BadInputError, match=r"a\.txt: not UTF-8 text \(byte 0xe9 at offset 3\); re-save it as UTF-8"):
        decode_text("caf\u00e9".encode("latin-1"), "a.txt")


def test_empty_and_blank_text():
    for data in (b"", b"  \n\t"):
        with pytest.raises(BadInputError, match=r"a\.md: empty text file"):
            decode_text(data, "a.md")


def test_bom_is_accepted():
    assert decode_text("\ufeffhello".encode("utf-8"), "a.txt") == "hello"


def test_title_from_markdown_heading_or_file_name():
    assert title_and_body("# Moon\n\nBody text.", "moon") == ("Moon", "Body text.")
    assert title_and_body("Just text.", "notes") == ("notes", "Just text.")


def test_scan_sorts_files_into_kinds(tmp_path):
    (tmp_path / "a.md").write_text("# A\n\ntext")
    (tmp_path / "b.TXT").write_text("text")
    (tmp_path / "c.jpg").write_bytes(b"x")
    (tmp_path / "d.svg").write_text("<svg/>")
    (tmp_path / "e.json").write_text("{}")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "f.md").write_text("secret")
    files, skipped, ignored = scan_paths([tmp_path, tmp_path / "missing"])
    assert sorted((f.path.name, f.modality) for f in files) == [("a.md", "text"), ("b.TXT", "text"), ("c.jpg", "image")]
    assert sorted((s.path.rsplit("/", 1)[-1], s.reason) for s in skipped) == [
        ("d.svg", "unsupported format (.svg); convert it to PNG or JPEG"),
        ("missing", "no such file or folder"),
    ]
    assert [p.rsplit("/", 1)[-1] for p in ignored] == ["e.json"]


def test_a_manifest_limits_its_folder_to_the_files_it_lists(tmp_path):
    (tmp_path / "a.md").write_text("# A\n\ntext")
    (tmp_path / "README.md").write_text("about this folder")
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"kind": "article", "path": "a.md", "title": "A", "url": "u"}) + "\n")
    manifest = find_manifests([tmp_path])
    files, skipped, ignored = scan_paths([tmp_path], listed=set(manifest))
    assert [f.path.name for f in files] == ["a.md"]
    assert [p.rsplit("/", 1)[-1] for p in ignored] == ["README.md"]
    assert manifest[(tmp_path / "a.md").resolve()]["url"] == "u"


def test_malformed_manifest_line_is_named():
    with pytest.raises(ValueError, match=r"m\.jsonl:2: not valid JSON"):
        list(parse_manifest_lines(['{"kind": "image", "path": "a.png"}', "{oops"], origin="m.jsonl"))


def test_bad_input_error_carries_path_and_reason():
    with pytest.raises(BadInputError) as caught:
        decode_text(b"", "notes/a.md")
    assert (caught.value.path, caught.value.reason) == ("notes/a.md", "empty text file")
    assert str(caught.value) == "notes/a.md: empty text file"
    plain = BadInputError("language code 'x' is not valid")
    assert (plain.path, plain.reason, str(plain)) == (None, "language code 'x' is not valid", "language code 'x' is not valid")


def test_manifest_model_round_trip(tmp_path):
    from rag.corpus.manifest import Manifest, read_manifest

    manifest = Manifest(tmp_path)
    manifest.put({"kind": "article", "path": "./A/article.md", "title": "A"})
    manifest.put({"kind": "image", "path": "A/x.jpg", "file_title": "File:X.jpg"})
    manifest.put({"kind": "article", "path": "A/article.md", "title": "A2"})  # same path, another spelling
    manifest.save()
    again = Manifest.load(tmp_path)
    assert sorted(again.records) == ["A/article.md", "A/x.jpg"]
    assert again.get("A//article.md")["title"] == "A2"
    assert list(again.images_in("A")) == ["File:X.jpg"]
    assert read_manifest(tmp_path)[(tmp_path / "A" / "x.jpg").resolve()]["kind"] == "image"
    assert not list(tmp_path.glob(".*.part"))
