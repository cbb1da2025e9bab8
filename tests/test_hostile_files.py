"""Files that are not what they seem, in a folder being ingested: each is skipped with a
reason naming it (or read correctly), nothing blocks, and the rest of the folder is indexed."""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import threading
import unicodedata
import zlib
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from rag.corpus.files import decode_text, read_source_bytes, scan_paths
from rag.corpus.manifest import find_manifests
from rag.errors import BadInputError
from rag.index import ingest as ingest_module
from rag.index.ingest import ingest

from conftest import photo

BLOCKING = "not a regular file; reading it could block, skipped"


def reasons_of(skipped) -> dict[str, str]:
    """Skipped entries as {file name: reason} (from scan_paths or an IngestReport)."""
    pairs = [(s.path, s.reason) if hasattr(s, "path") else (s["path"], s["reason"]) for s in skipped]
    return {Path(path).name: reason for path, reason in pairs}


def png_with_header(width: int, height: int, pixels_of: tuple[int, int]) -> bytes:
    """A PNG whose IHDR claims width x height while its data holds a `pixels_of` image."""
    buffer = io.BytesIO()
    Image.new("RGB", pixels_of, "red").save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr) & 0xFFFFFFFF)
    return bytes(data)


# ----------------------------------------------------------------------------- the scan


def test_fifos_and_sockets_are_skipped_without_blocking(tmp_path: Path) -> None:
    (tmp_path / "good.md").write_text("# Good\n\ntext")
    os.mkfifo(tmp_path / "pipe.md")
    os.mkfifo(tmp_path / "other-pipe")  # not a name we would read: ignored, as any unknown file
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock.jpg"))
    try:
        files, skipped, ignored = scan_paths([tmp_path])
    finally:
        server.close()
    assert [f.path.name for f in files] == ["good.md"]
    assert reasons_of(skipped) == {
        "pipe.md": f"a FIFO (named pipe), {BLOCKING}",
        "sock.jpg": f"a socket, {BLOCKING}",
    }
    assert [Path(p).name for p in ignored] == ["other-pipe"]
    # named explicitly, a FIFO is refused the same way, and reading one never waits for a writer
    assert reasons_of(scan_paths([tmp_path / "pipe.md"])[1]) == {"pipe.md": f"a FIFO (named pipe), {BLOCKING}"}
    outcome: list = []
    reader = threading.Thread(target=lambda: outcome.append(_catch(read_source_bytes, tmp_path / "pipe.md")))
    reader.start()
    reader.join(5)
    assert not reader.is_alive(), "reading a FIFO blocked"
    assert str(outcome[0]) == f"{tmp_path / 'pipe.md'}: a FIFO (named pipe), {BLOCKING}"


def _catch(fn, *args):
    try:
        return fn(*args)
    except BadInputError as exc:
        return exc


def test_links_loops_and_escapes(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "real.md").write_text("# Real\n\ntext")
    (root / "sub" / "inner.md").write_text("# Inner\n\ntext")
    (outside / "secret.md").write_text("# Secret\n\nnot for the index")
    (root / "alias.md").symlink_to(root / "real.md")  # inside: the file is ingested once
    (root / "escape.md").symlink_to(outside / "secret.md")
    (root / "escape-dir").symlink_to(outside, target_is_directory=True)
    (root / "sub-again").symlink_to(root / "sub", target_is_directory=True)  # inside: not descended twice
    (root / "loop-a.md").symlink_to(root / "loop-b.md")
    (root / "loop-b.md").symlink_to(root / "loop-a.md")
    (root / "self").symlink_to(root / "self")
    (root / "dangling.jpg").symlink_to(root / "gone.jpg")
    files, skipped, _ = scan_paths([root])
    assert sorted(str(f.path.relative_to(root.resolve())) for f in files) == ["real.md", "sub/inner.md"]
    real_outside = outside.resolve()
    assert reasons_of(skipped) == {
        "escape.md": f"a symbolic link leading outside {root.resolve()} (to {real_outside / 'secret.md'}); not followed",
        "escape-dir": f"a symbolic link leading outside {root.resolve()} (to {real_outside}); not followed",
        "loop-a.md": "a symbolic link loop; not followed",
        "loop-b.md": "a symbolic link loop; not followed",
        "self": "a symbolic link loop; not followed",
        "dangling.jpg": f"a broken symbolic link (its target {str(root / 'gone.jpg')!r} does not exist)",
    }
    # a link named on the command line is followed wherever it leads
    assert [f.path.name for f in scan_paths([root / "escape.md"])[0]] == ["secret.md"]


def test_folders_named_like_images_are_folders(tmp_path: Path) -> None:
    (tmp_path / "holiday.jpg").mkdir()
    (tmp_path / "holiday.jpg" / "notes.md").write_text("# Notes\n\ntext")
    (tmp_path / "empty.png").mkdir()
    files, skipped, ignored = scan_paths([tmp_path])
    assert [f.path.name for f in files] == ["notes.md"] and skipped == [] and ignored == []
    files, skipped, _ = scan_paths([tmp_path / "empty.png"])  # named explicitly: an empty folder
    assert files == [] and skipped == []


def test_odd_names_are_kept_and_matched_in_nfc(tmp_path: Path) -> None:
    nfd = unicodedata.normalize("NFD", "café.md")
    long_name = "l" * 247 + ".md"
    for name in ("new\nline.md", nfd, long_name, " spaced .md"):
        (tmp_path / name).write_text("# T\n\ntext")
    nfc = unicodedata.normalize("NFC", "café.md")
    (tmp_path / "manifest.jsonl").write_text(
        "".join(json.dumps({"kind": "article", "path": p, "title": p, "url": "u"}) + "\n"
                for p in (nfc, "new\nline.md", long_name, " spaced .md")), encoding="utf-8")
    manifest = find_manifests([tmp_path])
    files, skipped, ignored = scan_paths([tmp_path], listed=set(manifest))
    assert sorted(f.path.name for f in files) == sorted(["new\nline.md", nfd, long_name, " spaced .md"])
    assert skipped == [] and ignored == []


def test_utf16_and_utf32_with_a_bom_are_decoded_nul_bytes_are_not_text() -> None:
    text = "# Über\n\nZürich — 東京"
    for encoding in ("utf-16", "utf-16-be", "utf-32", "utf-8-sig"):
        data = text.encode(encoding)
        if encoding == "utf-16-be":
            data = b"\xfe\xff" + data
        assert decode_text(data, "a.md") == text, encoding
    with pytest.raises(BadInputError) as caught:
        decode_text(b"\xff\xfe\x41", "odd.md")
    assert caught.value.reason == ("not valid UTF-16-LE text although it starts with that byte order mark "
                                   "(bad bytes at offset 0); re-save it as UTF-8")
    with pytest.raises(BadInputError) as caught:
        decode_text(b"text\x00more", "nul.txt")
    assert str(caught.value) == "nul.txt: looks like a binary file (contains NUL bytes), not text"


# ----------------------------------------------------------------------------- a whole ingest


def test_a_folder_of_hostile_files_indexes_the_rest(open_test_index, corpus) -> None:
    (corpus / "nul.txt").write_bytes(b"# Nul\n\nsome\x00binary")
    (corpus / "wide.md").write_bytes("# Wide\n\nA text saved as UTF-16 with its mark.".encode("utf-16"))
    Image.new("RGB", (1, 1), "red").save(corpus / "pixel.png")
    Image.new("RGB", (20000, 4), "red").save(corpus / "strip.png")
    frames = [Image.new("P", (64, 64), colour) for colour in (10, 80, 160)]
    frames[0].save(corpus / "animated.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    pages = [Image.new("RGB", (64, 48), colour) for colour in ("red", "green")]
    pages[0].save(corpus / "pages.tiff", save_all=True, append_images=pages[1:])
    (corpus / "liar.png").write_bytes(png_with_header(60000, 60000, (8, 8)))  # claims 3.6 gigapixels
    (corpus / "short.png").write_bytes(png_with_header(640, 480, (8, 8)))  # claims more rows than it has
    bloated = PngImagePlugin.PngInfo()
    bloated.add_text("Comment", "x" * 5_000_000, zip=True)  # 5 KB on disk, 5 MB once inflated
    Image.new("RGB", (64, 64), "red").save(corpus / "bloated.png", pnginfo=bloated)
    (corpus / "document.jpg").write_bytes(b"%PDF-1.4\n1 0 obj << >> endobj\n%%EOF\n")
    (corpus / "jpeg-named.png").write_bytes(photo("rocket.jpg").read_bytes())  # another format: still a photo
    os.mkfifo(corpus / "pipe.md")
    (corpus / "escape.md").symlink_to(photo("rocket.jpg").parent / "README.txt")
    with open(os.fsencode(str(corpus)) + b"/caf\xe9.md", "w") as handle:
        handle.write("# Cafe\n\ntext")

    index = open_test_index()
    report = ingest(index, [corpus], progress=False)
    reasons = reasons_of(report.skipped)
    assert reasons.pop("short.png").startswith("corrupt or truncated image")
    assert reasons.pop("bloated.png") == ("corrupt or truncated image "
                                          "(Decompressed data too large for PngImagePlugin.MAX_TEXT_CHUNK)")
    assert reasons.pop("escape.md").startswith(f"a symbolic link leading outside {corpus.resolve()}")
    assert reasons == {
        "nul.txt": "looks like a binary file (contains NUL bytes), not text",
        "pixel.png": "too small to embed (1x1; the shorter side must be >= 8 px)",
        "strip.png": "too elongated to embed (20000x4; at most 50:1)",
        "liar.png": "60000x60000 pixels is over the limit of 64,000,000 (possible decompression bomb)",
        "document.jpg": "not a recognised image format (corrupt or unsupported)",
        "pipe.md": f"a FIFO (named pipe), {BLOCKING}",
        "caf\\xe9.md": "the name is not valid UTF-8 (bytes shown as \\xNN); rename it to index it",
    }
    for item in report.skipped:
        assert Path(item["path"]).parent == corpus  # each names its file
    # 3 articles + the UTF-16 one; 3 photos + animated GIF, multi-page TIFF, JPEG named .png
    assert index.counts() == {"text": 4, "image": 6}
    assert report.files_indexed == 10


def test_files_that_vanish_between_the_scan_and_the_read(open_test_index, corpus, monkeypatch) -> None:
    scan = ingest_module.scan_paths

    def scan_then_delete(paths, listed=None):
        found = scan(paths, listed)
        (corpus / "moon.md").unlink()
        return found

    plan = ingest_module.Ingestor.plan

    def plan_then_delete(self, paths):
        pending = plan(self, paths)
        (corpus / "rocket.jpg").unlink()
        return pending

    monkeypatch.setattr(ingest_module, "scan_paths", scan_then_delete)
    monkeypatch.setattr(ingest_module.Ingestor, "plan", plan_then_delete)
    index = open_test_index()
    report = ingest(index, [corpus], progress=False)
    assert reasons_of(report.skipped) == {
        "moon.md": "vanished since the scan (no such file)",
        "rocket.jpg": "vanished since the scan (no such file)",
    }
    assert index.counts() == {"text": 2, "image": 2}


def test_names_that_are_not_utf8_are_reported_printably(tmp_path: Path) -> None:
    raw = os.fsencode(str(tmp_path))
    with open(raw + b"/caf\xe9.md", "w") as handle:
        handle.write("# Cafe\n\ntext")
    os.mkdir(raw + b"/d\xfcsseldorf")
    with open(raw + b"/d\xfcsseldorf/inside.md", "w") as handle:
        handle.write("# Inside\n\ntext")
    (tmp_path / "good.md").write_text("# Good\n\ntext")
    (tmp_path / "alias.md").symlink_to(os.fsdecode(raw + b"/caf\xe9.md"))
    files, skipped, _ = scan_paths([tmp_path])
    assert [f.path.name for f in files] == ["good.md"]
    bad = "the name is not valid UTF-8 (bytes shown as \\xNN); rename it to index it"
    assert {(s.path, s.reason) for s in skipped} == {
        (f"{tmp_path}/caf\\xe9.md", bad),
        (f"{tmp_path}/d\\xfcsseldorf", bad),
        (f"{tmp_path}/alias.md", f"a link to {tmp_path.resolve()}/caf\\xe9.md: {bad}"),
    }
    json.dumps([s.path for s in skipped], ensure_ascii=False).encode("utf-8")  # storable and printable
    assert reasons_of(scan_paths([Path(os.fsdecode(raw + b"/caf\xe9.md"))])[1]) == {"caf\\xe9.md": bad}


def test_a_malformed_manifest_stops_the_ingest_with_its_line(open_test_index, corpus) -> None:
    from rag.corpus.manifest import Manifest

    good = json.dumps({"kind": "article", "path": "cat.md", "title": "Cat\u2028line", "url": "u"}, ensure_ascii=False)
    (corpus / "manifest.jsonl").write_text(good + "\n", encoding="utf-8")
    assert Manifest.load(corpus).get("cat.md")["title"] == "Cat\u2028line"  # U+2028 is not a line break here
    (corpus / "manifest.jsonl").write_text(good + "\n{oops\n", encoding="utf-8")
    index = open_test_index()
    with pytest.raises(BadInputError) as caught:
        ingest(index, [corpus], progress=False)
    assert str(caught.value) == (f"{corpus / 'manifest.jsonl'}:2: not valid JSON (Expecting property name enclosed "
                                 "in double quotes); fix or delete that line (or the manifest), then ingest again")
    (corpus / "manifest.jsonl").write_bytes(good.encode() + b"\n\xff\n")
    with pytest.raises(BadInputError, match=r"manifest\.jsonl:2: not UTF-8 text; fix or delete that line"):
        ingest(index, [corpus], progress=False)
    assert index.counts() == {"text": 0, "image": 0}


def test_size_limits_and_hashing_in_blocks(tmp_path: Path) -> None:
    import hashlib

    from rag.corpus.files import hash_source

    big = tmp_path / "big.md"
    big.write_bytes(b"# Big\n\n" + b"line\n" * 1000)
    with pytest.raises(BadInputError) as caught:
        read_source_bytes(big, max_bytes=1000)
    assert str(caught.value) == f"{big}: too large (5,007 bytes; files over 1,000 bytes are skipped)"
    assert read_source_bytes(big, max_bytes=10_000) == big.read_bytes()
    picture = tmp_path / "p.jpg"
    picture.write_bytes(photo("rocket.jpg").read_bytes() * 3)
    assert hash_source(picture) == hashlib.sha256(picture.read_bytes()).hexdigest()
    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(BadInputError, match="a FIFO"):
        hash_source(tmp_path / "pipe.jpg")
    with pytest.raises(BadInputError, match="vanished since the scan"):
        hash_source(tmp_path / "gone.jpg")


def test_an_oversized_text_file_is_skipped_with_its_size(open_test_index, corpus, monkeypatch) -> None:
    monkeypatch.setattr(ingest_module, "MAX_TEXT_BYTES", 100)
    (corpus / "long.md").write_text("# Long\n\n" + "word " * 100)
    report = ingest(open_test_index(), [corpus], progress=False)
    assert reasons_of(report.skipped) == {"long.md": "too large (508 bytes; files over 100 bytes are skipped)"}
    assert report.text_nodes == 3 and report.image_nodes == 3
