"""Decoder fuzzing (issue 19, item 5): 1,200 seeded mutated files of every accepted format go
through `load_image`, the data pipeline and the web API. Each gives a valid result or a per-file
error in plain words, never a crash, a hang or TensorFlow's internals; and a broken file reads the
same in predict, evaluation, `defax data check` and the web page (`decode_failure`, one home).
"""

import base64
import io
import re
import time
from collections import Counter

import keras
import numpy as np
import pytest
from fuzz import FORMATS, MUTATIONS, corpus
from fuzz_regressions import REGRESSIONS
from helpers import corrupt_middle_png, decompression_bomb_png, encode, pattern, write

from defax_keras.data.files import ImageFileError, load_image
from defax_keras.data.formats import FORMAT_NAMES, decode_failure, inspect_bytes
from defax_keras.data.pipeline import make_dataset
from defax_keras.data.sources import load_source

PER_FORMAT = 200
SEED = 19
SIZE = 32
SECONDS_PER_FILE = 5.0
"""A file decodes or fails well within this: the pixel limit bounds what a header can demand."""

INTERNALS = ("{{", "}}", "function_node", "Op:", "__wrapped__", "Traceback", "/job:localhost", "device:CPU", "object at 0x", "<_io.", "Error:")
"""What a decoder's own error carries (TensorFlow's graph internals, a Python repr) and a user must never see."""

_FMT = "|".join(FORMAT_NAMES.values())
MESSAGE = re.compile(
    "^(?:"
    r"empty file \(0 bytes\)"
    r"|not an image \((?:looks like (?:text|HTML|SVG|JSON|a PDF|a ZIP archive|gzip data)|content is not JPEG, PNG, BMP, GIF, WebP or TIFF)\)"
    rf"|truncated (?:JPEG|PNG|GIF|WebP|BMP) \([a-zA-Z -]+\)"
    rf"|corrupt (?:{_FMT}) (?:header|data)(?: \((?:checksum mismatch|data cut short|impossible dimensions|unknown compression|unsupported pixel format)\))?"
    rf"|(?:{_FMT}) image too large \((?:\d+ frames of )?(?:[\d,x]+|too many) pixels, at most [\d,]+\)"
    r"|GIF with no frames"
    rf"|(?:{_FMT}) images are not accepted here \(accepted: [A-Za-z, ]+\)"
    ")$"
)
"""Every per-file image error: the wording table of docs/data.md, and nothing else."""


def assert_plain(message: str, where: str) -> None:
    assert not any(token in message for token in INTERNALS), f"{where}: decoder internals in {message!r}"
    assert MESSAGE.match(message), f"{where}: not one of the documented messages: {message!r}"


@pytest.fixture(scope="module")
def files():
    made = corpus(PER_FORMAT, SEED)
    assert corpus(PER_FORMAT, SEED) == made  # seeded: the same bytes on every run
    return made


@pytest.fixture(scope="module")
def folder(files, tmp_path_factory):
    """The corpus as a flat real/fake dataset; GIFs get a `.png` name (datasets find files by extension, read them by content)."""
    root = tmp_path_factory.mktemp("fuzz")
    paths = {}
    for index, (name, data) in enumerate(files):
        paths[name] = write(root / ("real", "fake")[index % 2] / name.replace(".gif", ".png"), data)
    return root, paths


@pytest.fixture(scope="module")
def loaded(files, folder):
    """`load_image` on every file: name -> (pixels or None, error or None, seconds)."""
    _, paths = folder
    outcomes = {}
    for name, _ in files:
        start = time.perf_counter()
        try:
            pixels, error = load_image(paths[name], SIZE), None
        except ImageFileError as exc:
            pixels, error = None, str(exc)
        outcomes[name] = (pixels, error, time.perf_counter() - start)
    return outcomes


def test_the_corpus_covers_every_format_and_mutation(files):
    assert len(files) == PER_FORMAT * len(FORMATS) >= 1000
    kinds = Counter((name.split("-")[0], name.split("-")[2].split(".")[0]) for name, _ in files)
    assert {fmt for fmt, _ in kinds} == {fmt.lower() for fmt in FORMATS}
    assert all(kinds[(fmt.lower(), kind)] >= 3 for fmt in FORMATS for kind in MUTATIONS)
    assert sum(data == b"" for _, data in files) == len(FORMATS) * 3


def test_load_image_gives_pixels_or_a_plain_error_for_every_mutated_file(files, loaded):
    results = Counter()
    for name, data in files:
        pixels, error, seconds = loaded[name]
        assert seconds < SECONDS_PER_FILE, f"{name} took {seconds:.1f} s"
        if error is None:
            assert pixels.shape == (SIZE, SIZE, 3) and pixels.dtype == np.float32, name
            assert np.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 255, name
        else:
            assert_plain(error, name)
            assert error == decode_failure(data), name  # the one home of the wording
        results[(name.split("-")[0], error is None)] += 1
    assert sum(n for (_, ok), n in results.items() if ok) > 100 and sum(n for (_, ok), n in results.items() if not ok) > 100


def test_pipeline_skips_and_counts_every_bad_file_with_the_same_words(files, folder, loaded):
    root, paths = folder
    source = load_source(root)
    dataset = make_dataset(source, "all", image_size=SIZE, batch_size=128, shuffle=False)
    seen = 0
    for images, _ in dataset:
        assert np.isfinite(images.numpy()).all()
        seen += int(images.shape[0])
    skipped = {s.path: s.reason for s in source.skipped}
    assert seen + len(skipped) == len(files)  # every file is a result or a counted skip
    for name, _ in files:
        error = loaded[name][1]
        assert skipped.get(str(paths[name])) == error, name  # predict and evaluation agree, file by file
    # A training pass over the same folder: bad files dropped, the epoch keeps its length, nothing crashes.
    train = make_dataset(source, "all", image_size=SIZE, batch_size=128, shuffle=True, augment=True, seed=0)
    assert sum(int(images.shape[0]) for images, _ in train) == len(source.samples)


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    from defax_keras.models import build_model
    from defax_keras.web.app import create_app
    from defax_keras.web.server import build_service

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("fuzz_model") / "simple_cnn_nano.keras"
    build_model("simple_cnn_nano").save(path)
    service = build_service(path)
    yield create_app(service).test_client()
    service.close()


def _post(client, batch, query=""):
    data = {"files": [(io.BytesIO(content), name) for name, content in batch]}
    response = client.post(f"/api/predict{query}", data=data, content_type="multipart/form-data")
    assert response.status_code == 200, response.json
    return response.json["results"]


def test_web_api_answers_every_mutated_file(web, files, loaded):
    """Batches alternate the page's default faces (`auto`: photos decoded by PIL to look for faces)
    and `off` (scored whole, decoded exactly as `load_image`), so every file goes through one of them."""
    from defax_keras.web.app import ACCEPTED_FORMATS, MAX_PIXELS

    answers = Counter()
    for number, start in enumerate(range(0, len(files), 60)):
        batch, faces = files[start : start + 60], ("auto", "off")[number % 2]
        results = _post(web, batch, f"?faces={faces}")
        assert len(results) == len(batch)
        for (name, data), result in zip(batch, results):
            assert result["name"] == name
            if "error" not in result:
                no_face = result["label"] == "no face" and result["p_fake"] is None
                assert no_face or (0 <= result["p_fake"] <= 1 and result["label"] in ("real", "fake")), result
                answers[faces, "result"] += 1
                continue
            answers[faces, "error"] += 1
            assert_plain(result["error"], name)
            info = inspect_bytes(data, MAX_PIXELS)
            if info.ok and info.format in ACCEPTED_FORMATS:
                assert result["error"] == decode_failure(data, MAX_PIXELS), name
            if faces == "off" and (not info.ok or info.format in ACCEPTED_FORMATS) and "too large" not in result["error"]:
                assert result["error"] == loaded[name][1], name  # the same file, the same words as predict
    assert min(answers.values()) > 50, answers


# ------------------------------------------------------------------------- one wording everywhere


def _png_with_bad_idat_crc() -> bytes:
    data = bytearray(encode(pattern(24, 24), "PNG"))
    at = data.index(b"IEND") - 8  # the last byte of IDAT's CRC
    data[at] ^= 0xFF
    return bytes(data)


def _gif_without_frames() -> bytes:
    data = encode(pattern(24, 24), "GIF")
    header = 13 + (3 << ((data[10] & 7) + 1))
    return data[:header] + b";"


BROKEN = {
    "text.jpg": (b"just some text, named like a JPEG\n", "not an image (looks like text)"),
    "page.png": (b"<!DOCTYPE html><html><body>404</body></html>", "not an image (looks like HTML)"),
    "empty.png": (b"", "empty file (0 bytes)"),
    "cut.jpg": (encode(pattern(64, 64), "JPEG")[:400], "truncated JPEG (no end-of-image marker)"),
    "checksum.png": (_png_with_bad_idat_crc(), "corrupt PNG data (checksum mismatch)"),
    "damaged.png": (corrupt_middle_png(), "corrupt PNG data"),
    "noframes.png": (_gif_without_frames(), "GIF with no frames"),
    "bomb.png": (decompression_bomb_png(30000), "PNG image too large (30000x30000 pixels, at most 89,478,485)"),
}
"""Broken files and the exact words every command gives for them (docs/data.md has the table)."""
WEB_ONLY = {"bomb.png": "PNG image too large (30000x30000 pixels, at most 40,000,000)"}
"""The page has a lower pixel limit: its own policy, the same wording."""


def test_predict_data_check_pipeline_and_web_use_the_same_words(tmp_path, web):
    from defax_keras.data.check import check_dataset
    from defax_keras.inference.predict import predict

    root = tmp_path / "data"
    for split in ("train", "test"):
        for label in ("real", "fake"):
            for i in range(3):
                write(root / split / label / f"{i}.jpg", encode(pattern(32, 32, seed=i), "JPEG"))
    for name, (data, _) in BROKEN.items():
        write(root / "test" / "fake" / name, data)
    model = tmp_path / "nano.keras"
    keras.utils.set_random_seed(0)
    from defax_keras.models import build_model

    build_model("simple_cnn_nano").save(model)

    predicted = {r["path"].rsplit("/", 1)[-1]: r.get("error") for r in predict(model, [root / "test" / "fake"], faces="off").records}
    checked = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in check_dataset(root, duplicates=False)["skipped"]}
    source = load_source(root)
    list(make_dataset(source, "test", image_size=SIZE, batch_size=8))
    pipeline = {s.path.rsplit("/", 1)[-1]: s.reason for s in source.skipped}
    served = {r["name"]: r.get("error") for r in _post(web, [(name, data) for name, (data, _) in BROKEN.items()])}
    for name, (_, words) in BROKEN.items():
        assert predicted[name] == checked[name] == pipeline[name] == words, name
        assert served[name] == WEB_ONLY.get(name, words), name
        assert_plain(served[name], name)
    assert [predicted[f"{i}.jpg"] for i in range(3)] == [None] * 3


# --------------------------------------------------------------------------- regressions found by the fuzz loop

def _animated_gif(frames: int, side: int) -> bytes:
    """A GIF of `frames` copies of one blank `side`-pixel frame: the frame is encoded once, its block repeated."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("P", (side, side), 0).save(buffer, "GIF")
    data = buffer.getvalue()
    first = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    return data[:first] + data[first:-1] * frames + b";"


def _recipes() -> dict:
    """Regressions made on the fly: `(bytes, words or None)`."""
    padded = encode(pattern(24, 24), "BMP")
    png = encode(pattern(24, 24), "PNG")
    return {
        # TensorFlow refuses a BMP with bytes after its rows (GIMP pads files to 4 bytes); PIL reads it.
        "padded.bmp": (padded[:2] + (len(padded) + 2).to_bytes(4, "little") + padded[6:] + b"\0\0", None),
        # PIL's error names the file; "crc" in the name was read as the cause.
        "crc-in-the-name.png": (png[:8] + b"\0" * 30 + png[-12:], "corrupt PNG header"),
        # PIL skips IDAT checksums, libpng does not: the message said nothing, or TensorFlow's internals.
        "idat-crc.png": (_png_with_bad_idat_crc(), "corrupt PNG data (checksum mismatch)"),
        "noframes.gif": (_gif_without_frames(), "GIF with no frames"),
        # TensorFlow decodes every frame of a GIF to keep the first: a 50 KB file asked for 90 M pixels.
        "animated-bomb.gif": (_animated_gif(90, 1000), "GIF image too large (90 frames of 1000x1000 pixels, at most 89,478,485)"),
    }


def test_fuzz_regressions(tmp_path):
    """Each file was mishandled before: TensorFlow's internals or a Python object's address in the
    message, a file name read as the cause, a padded BMP refused, a frameless GIF called corrupt,
    a JPEG that predict scored and the pipeline skipped, an animated GIF decoded frame by frame. Each gives its words in `load_image` and
    the pipeline alike."""
    cases = {name: (base64.b64decode(data), words) for name, (data, _, words) in REGRESSIONS.items()} | _recipes()
    root = tmp_path / "data"
    for index, (name, (data, _)) in enumerate(cases.items()):
        write(root / ("real", "fake")[index % 2] / name.replace(".gif", ".png"), data)
    write(root / "real" / "good.jpg", encode(pattern(24, 24), "JPEG"))
    source = load_source(root)
    list(make_dataset(source, "all", image_size=SIZE, shuffle=False))
    skipped = {s.path.rsplit("/", 1)[-1]: s.reason for s in source.skipped}
    for index, (name, (_, words)) in enumerate(cases.items()):
        path = root / ("real", "fake")[index % 2] / name.replace(".gif", ".png")
        if words is None:
            assert load_image(path, SIZE).shape == (SIZE, SIZE, 3), name
        else:
            with pytest.raises(ImageFileError) as raised:
                load_image(path, SIZE)
            assert str(raised.value) == words, name
        assert skipped.get(path.name) == words, name
