import numpy as np
import pytest
import tensorflow as tf
from helpers import (
    corrupt_middle_png,
    decompression_bomb_png,
    encode,
    jpeg_with_orientation,
    pattern,
    write,
)
from PIL import Image, ImageOps

from defax_keras.data.formats import ImageFileError, decode_with_pil, inspect_image, sniff_format

LOSSLESS = [
    ("PNG", None), ("PNG", "RGBA"), ("PNG", "L"), ("PNG", "P"), ("PNG", "LA"),
    ("BMP", None), ("BMP", "P"), ("TIFF", None), ("TIFF", "L"), ("WEBP", None),
]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF"])
def test_sniff_format_by_content(fmt):
    assert sniff_format(encode(pattern(), fmt)[:32]) == fmt


def test_sniff_rejects_text():
    assert sniff_format(b"hello, I am not an image") is None


@pytest.mark.parametrize(
    "name, data, reason",
    [
        ("empty.jpg", b"", "empty file"),
        ("text.jpg", b"just some text that pretends to be a JPEG", "not an image"),
        ("cut.jpg", encode(pattern(), "JPEG")[:300], "truncated JPEG"),
        ("cut.png", encode(pattern(), "PNG")[:200], "truncated PNG"),
        ("cut.webp", encode(pattern(), "WEBP")[:60], "truncated WebP"),
        ("cut.bmp", encode(pattern(), "BMP")[:500], "truncated BMP"),
        ("bomb.png", decompression_bomb_png(), "too large"),
    ],
)
def test_inspect_reports_bad_files(tmp_path, name, data, reason):
    info = inspect_image(write(tmp_path / name, data))
    assert not info.ok
    assert reason in info.error


def test_inspect_good_file_reads_header_only(tmp_path):
    info = inspect_image(write(tmp_path / "a.png", encode(pattern(50, 20), "PNG", "P")))
    assert info.ok and (info.format, info.width, info.height, info.mode) == ("PNG", 50, 20, "P")
    assert not info.needs_pil


def test_inspect_missing_file(tmp_path):
    assert "cannot read" in inspect_image(tmp_path / "nope.jpg").error


def test_corrupt_pixel_data_passes_header_scan(tmp_path):
    # The header scan is cheap by design; the decode check in the pipeline catches these.
    assert inspect_image(write(tmp_path / "c.png", corrupt_middle_png())).ok


@pytest.mark.parametrize("fmt, mode", LOSSLESS)
def test_pil_decoder_matches_reference(fmt, mode):
    data = encode(pattern(), fmt, mode, **({"lossless": True} if fmt == "WEBP" else {}))
    expected = np.asarray(Image.open(__import__("io").BytesIO(data)).convert("RGBA").convert("RGB"))
    np.testing.assert_array_equal(decode_with_pil(data), expected)


@pytest.mark.parametrize("fmt, mode", [m for m in LOSSLESS if m[0] != "TIFF" and m != ("BMP", "P")])
def test_tensorflow_and_pil_decoders_agree(fmt, mode):
    data = encode(pattern(), fmt, mode, **({"lossless": True} if fmt == "WEBP" else {}))
    native = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    np.testing.assert_array_equal(native, decode_with_pil(data))


def test_palette_bmp_is_routed_to_pil(tmp_path):
    # TensorFlow's BMP decoder mis-reads palette BMPs; the scan must send them to PIL.
    info = inspect_image(write(tmp_path / "p.bmp", encode(pattern(), "BMP", "P")))
    assert info.ok and info.needs_pil


def test_sixteen_bit_png_scaled_like_tensorflow():
    values = (np.arange(40 * 30, dtype=np.uint32).reshape(30, 40) * 50 % 65536).astype(np.uint16)
    data = encode(values, "PNG")
    expected = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    np.testing.assert_array_equal(decode_with_pil(data), expected)


def test_cmyk_jpeg_decodes_to_rgb():
    data = encode(pattern(), "JPEG", "CMYK", quality=95)
    rgb = decode_with_pil(data)
    assert rgb.shape == (30, 40, 3)
    assert np.abs(rgb.astype(int) - pattern().astype(int)).mean() < 6


def test_exif_orientation_applied(tmp_path):
    array = pattern(40, 20)
    data = jpeg_with_orientation(array, 6)  # "rotate 90 CW to display"
    info = inspect_image(write(tmp_path / "o.jpg", data))
    assert info.orientation == 6 and info.needs_pil
    decoded = decode_with_pil(data)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.jpg")).convert("RGB"))
    assert decoded.shape == (40, 20, 3)
    np.testing.assert_array_equal(decoded, expected)


def test_pil_decoder_refuses_bomb_and_garbage_in_decode_failures_words():
    with pytest.raises(ImageFileError, match=r"^PNG image too large \(30000x30000 pixels, at most 89,478,485\)$"):
        decode_with_pil(decompression_bomb_png())
    with pytest.raises(ImageFileError, match=r"^not an image \(looks like text\)$"):
        decode_with_pil(b"garbage bytes")
    with pytest.raises(ImageFileError, match=r"^corrupt PNG data$"):
        decode_with_pil(corrupt_middle_png())
