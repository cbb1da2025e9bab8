"""Every kind of bad or unusual image: normalised when it is an image, reported when not."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from rag.media.images import inspect_image_bytes, open_image
from rag.errors import BadInputError

from conftest import photo


def save(image: Image.Image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(BadInputError, match=r"empty\.jpg: empty file \(0 bytes\)"):
        open_image(path)


def test_truncated_jpeg(tmp_path):
    data = photo("rocket.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(BadInputError, match=r"cut\.jpg: corrupt or truncated image"):
        open_image(path)


def test_random_bytes_with_image_name(tmp_path):
    path = tmp_path / "noise.png"
    path.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(BadInputError, match=r"noise\.png: not a recognised image format"):
        open_image(path)


def test_decompression_bomb(tmp_path):
    path = save(Image.new("L", (3000, 3000)), tmp_path / "bomb.png")
    with pytest.raises(BadInputError, match=r"bomb\.png: 3000x3000 pixels is over the limit of 1,000,000 \(possible decompression bomb\)"):
        open_image(path, max_pixels=1_000_000)


def test_svg_is_refused_by_name_and_by_content(tmp_path):
    svg = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
    (tmp_path / "logo.svg").write_bytes(svg)
    (tmp_path / "logo.png").write_bytes(svg)
    for name in ("logo.svg", "logo.png"):
        with pytest.raises(BadInputError, match="SVG is a vector format; it is not supported"):
            open_image(tmp_path / name)


def test_html_error_page_is_not_an_image():
    with pytest.raises(BadInputError, match=r"x\.jpg: an HTML page, not an image"):
        inspect_image_bytes(b"<!DOCTYPE html><html><body>429 Too Many Requests</body></html>", "x.jpg")


def test_png_bytes_are_reported_as_png_whatever_the_name():
    buffer = io.BytesIO()
    Image.new("RGB", (20, 10), "red").save(buffer, format="PNG")
    info = inspect_image_bytes(buffer.getvalue(), "photo.jpg")
    assert (info.format, info.extension, info.width, info.height) == ("PNG", ".png", 20, 10)


@pytest.mark.parametrize(
    "mode,fill,expected",
    [
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),  # pure red in CMYK
        ("P", None, (0, 0, 255)),
        ("RGBA", (0, 255, 0, 0), (255, 255, 255)),  # fully transparent: white background
        ("LA", (128, 255), (128, 128, 128)),
    ],
)
def test_modes_are_converted_to_rgb(tmp_path, mode, fill, expected):
    if mode == "P":
        image = Image.new("RGB", (8, 8), (0, 0, 255)).convert("P")
        path = save(image, tmp_path / "palette.gif")
    else:
        image = Image.new(mode, (8, 8), fill)
        path = save(image, tmp_path / f"{mode}.{'jpg' if mode == 'CMYK' else 'png'}")
    out = open_image(path)
    assert out.mode == "RGB"
    assert out.getpixel((4, 4)) == pytest.approx(expected, abs=3)


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
    array = np.full((8, 8), 30000, dtype=np.uint16)
    array[0, 0] = 60000
    path = save(Image.fromarray(array), tmp_path / "deep.png")
    assert Image.open(path).mode.startswith("I")
    out = open_image(path)
    assert out.mode == "RGB"
    assert out.getpixel((4, 4))[0] == 127  # 30000 / 60000 * 255, not 255


def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = save(image, tmp_path / "rotated.jpg", exif=exif)
    assert Image.open(path).size == (40, 20)
    assert open_image(path).size == (20, 40)


def test_real_photo_opens_unchanged():
    image = open_image(photo("chelsea.png"))
    assert (image.mode, image.size) == ("RGB", (451, 300))
