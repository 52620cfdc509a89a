"""`defax faces extract`: photos in any layout become aligned face crops in the same layout, resumably."""

import csv
import io
import os
import shutil
from pathlib import Path

import pytest
from photos import background, composite, two_faces
from PIL import Image

from defax_keras.data.sources import load_source
from defax_keras.errors import DefaxError
from defax_keras.faces.extract import REPORT_FILE, extract_faces
from defax_keras.faces.settings import FaceSettings

SETTINGS = FaceSettings(mode="largest", crop_size=64)


def _jpeg(pixels) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def files():
    """Encoded test files: one face, two faces, no face, a truncated JPEG (header check) and a broken one (decoding)."""
    one = _jpeg(composite([("astronaut", 200, 150, 110, 0)], size=(400, 300))[0])
    buffer = io.BytesIO()
    Image.fromarray(background(320, 240, seed=1)).save(buffer, format="PNG")
    none = buffer.getvalue()
    # A PNG with one damaged byte of pixel data: it passes the dataset's header check and fails only when decoded.
    broken = bytearray(none)
    broken[broken.index(b"IDAT") + 100] ^= 0xFF
    return {"one": one, "two": _jpeg(two_faces(size=(480, 320))[0]), "none": none, "truncated": one[: len(one) // 2], "broken": bytes(broken)}


def _put(root, layout, files):
    """Write `{relative path: file kind}` under `root`."""
    for relative, kind in layout.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[kind])


def _report(folder, source) -> dict:
    """The rows of `faces_report.csv`, by source path relative to `source`."""
    with open(folder / REPORT_FILE, newline="") as handle:
        return {Path(row["source"]).relative_to(source).as_posix(): row for row in csv.DictReader(handle)}


def _crop_sizes(folder) -> set:
    sizes = set()
    for path in folder.rglob("*.png"):
        with Image.open(path) as image:
            image.load()
            sizes.add(image.size)
    return sizes


def test_split_folders_keep_splits_labels_and_report_every_file(tmp_path, files):
    source = tmp_path / "photos"
    _put(source, {
        "Train/Real/one.jpg": "one", "Train/Real/two.jpg": "two", "Train/Fake/one.jpg": "one", "Train/Fake/none.png": "none",
        "Train/Fake/truncated.jpg": "truncated", "Train/Fake/broken.png": "broken",
        "Validation/Real/one.jpg": "one", "Validation/Fake/one.jpg": "one", "Test/Real/one.jpg": "one", "Test/Fake/one.jpg": "one",
    }, files)
    output = tmp_path / "faces"
    result = extract_faces(source, output, SETTINGS, workers=0)

    # The folders keep their spelling; load_source reads the crops with the same splits and labels.
    assert (output / "Train" / "Real" / "one.png").is_file() and (output / "Validation" / "Fake" / "one.png").is_file()
    faces = load_source(output)
    assert faces.layout == "split-folders"
    assert faces.counts() == {"train": {"real": 2, "fake": 1}, "valid": {"real": 1, "fake": 1}, "test": {"real": 1, "fake": 1}}
    assert result.crop_counts() == faces.counts()
    assert _crop_sizes(output) == {(64, 64)}
    # The two-face photo gives one crop: the largest face.
    assert sorted(p.name for p in (output / "Train" / "Real").iterdir()) == ["one.png", "two.png"]

    assert (result.photos, result.crops, result.crops_written, result.no_face, result.several_faces) == (10, 7, 7, 1, 1)
    assert sorted((os.path.basename(r["source"]), r["status"]) for r in result.failed) == [("broken.png", "failed"), ("truncated.jpg", "unreadable")]
    report = _report(output, source)
    assert len(report) == 10
    none, two = report["Train/Fake/none.png"], report["Train/Real/two.jpg"]
    truncated, broken = report["Train/Fake/truncated.jpg"], report["Train/Fake/broken.png"]
    assert none["status"] == "no face" and none["crops"] == "0"
    assert two["faces"] == "2" and two["crops"] == "1" and two["files"] == "Train/Real/two.png"
    assert truncated["status"] == "unreadable" and "truncated" in truncated["error"]
    assert truncated["label"] == "fake" and truncated["split"] == "train"
    assert broken["status"] == "failed" and broken["error"] == "corrupt PNG data (checksum mismatch)"  # decode_failure's words
    assert report["Test/Fake/one.jpg"]["files"] == "Test/Fake/one.png" and report["Test/Fake/one.jpg"]["label"] == "fake"
    assert FaceSettings.load(output) == SETTINGS == result.settings


def test_all_faces_resume_and_overwrite(tmp_path, files):
    source = tmp_path / "photos"
    _put(source, {"real/two.jpg": "two", "real/one.jpg": "one", "fake/one.jpg": "one", "fake/none.png": "none"}, files)
    output = tmp_path / "faces"
    settings = SETTINGS.replace(mode="all")
    first = extract_faces(source, output, settings, workers=0)
    assert sorted(p.name for p in (output / "real").iterdir()) == ["one_face1.png", "two_face1.png", "two_face2.png"]
    assert first.crops_written == 4 and first.resumed == 0
    assert load_source(output).layout == "class-folders"
    assert {row["split"] for row in first.rows} == {""}  # no splits in the data: none invented in the report

    # Resume: only the deleted crop is made again; the others are not rewritten.
    crops = sorted(output.rglob("*.png"))
    for path in crops:
        os.utime(path, (1_000_000, 1_000_000))
    (output / "real" / "two_face2.png").unlink()
    again = extract_faces(source, output, settings, workers=0)
    assert again.crops_written == 1 and again.resumed == 3 and again.crops == 4
    assert [p.stat().st_mtime != 1_000_000 for p in crops] == [p.name == "two_face2.png" for p in crops]

    # Other settings on the same folder: refused, unless --overwrite, which removes the old crops first.
    with pytest.raises(DefaxError, match="other face settings"):
        extract_faces(source, output, SETTINGS, workers=0)
    redone = extract_faces(source, output, SETTINGS, overwrite=True, workers=0)
    assert redone.crops_written == 3 and redone.resumed == 0
    assert sorted(p.name for p in (output / "real").iterdir()) == ["one.png", "two.png"]
    assert FaceSettings.load(output) == SETTINGS


def test_a_killed_run_leaves_no_half_written_crop(tmp_path, files, monkeypatch):
    source = tmp_path / "photos"
    _put(source, {"real/a.jpg": "one", "real/b.jpg": "one", "fake/c.jpg": "one"}, files)
    output = tmp_path / "faces"
    save = Image.Image.save
    calls = []

    def killed_while_saving(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) == 2:  # the second crop: a few bytes out, then the process dies
            with open(fp, "wb") as handle:
                handle.write(b"\x89PNG\r\n\x1a\n")
            raise KeyboardInterrupt
        return save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", killed_while_saving)
    with pytest.raises(KeyboardInterrupt):
        extract_faces(source, output, SETTINGS, workers=0)
    monkeypatch.setattr(Image.Image, "save", save)
    assert len(list(output.rglob("*.png"))) == 1  # the half-written crop has only its temporary name
    assert len(list(output.rglob(".*.part"))) == 1

    result = extract_faces(source, output, SETTINGS, workers=0)
    assert result.resumed == 1 and result.crops_written == 2
    assert _crop_sizes(output) == {(64, 64)} and len(list(output.rglob("*.png"))) == 3
    assert len(load_source(output)) == 3


def test_csv_manifest_in_worker_processes(tmp_path, files):
    """A Hard-set style data.csv (ids without extension, a split column), extracted by a worker process."""
    source = tmp_path / "hard"
    _put(source, {"images/r1.jpg": "one", "images/r2.jpg": "two", "images/f1.jpg": "one", "images/f2.png": "none"}, files)
    rows = [("r1", "real", "train"), ("r2", "real", "test"), ("f1", "fake", "train"), ("f2", "fake", "test")]
    (source / "data.csv").write_text("images_id,label,split\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows))
    output = tmp_path / "faces"
    result = extract_faces(source / "data.csv", output, SETTINGS.replace(mode="all"), workers=1)

    assert result.data == output  # data.csv is found by name
    with open(output / "data.csv", newline="") as handle:
        written = list(csv.DictReader(handle))
    assert list(written[0]) == ["images_id", "label", "split"]
    assert [(r["images_id"], r["label"], r["split"]) for r in written] == [
        ("images/r1_face1.png", "real", "train"), ("images/r2_face1.png", "real", "test"), ("images/r2_face2.png", "real", "test"),
        ("images/f1_face1.png", "fake", "train"),
    ]
    faces = load_source(output)
    assert faces.layout == "csv-manifest (data.csv)"
    assert faces.counts() == {"train": {"real": 1, "fake": 1}, "test": {"real": 2, "fake": 0}}
    assert result.no_face == 1 and _crop_sizes(output) == {(64, 64)}


def test_140k_layout_keeps_its_csvs(tmp_path, files):
    source = tmp_path / "140k"
    header = ",original_path,id,label,label_str,path\n"
    kinds = {}
    for split in ("train", "valid", "test"):
        lines = []
        for index, (name, label) in enumerate((("real", 1), ("fake", 0))):
            relative = f"{split}/{name}/{split}{index}.jpg"
            kinds[f"real_vs_fake/real-vs-fake/{relative}"] = "one"
            lines.append(f"{index},/x/{relative},{split}{index},{label},{name},{relative}\n")
        if split == "train":
            kinds["real_vs_fake/real-vs-fake/train/fake/empty.png"] = "none"
            lines.append("2,/x/empty.png,empty,0,fake,train/fake/empty.png\n")
        (source / f"{split}.csv").parent.mkdir(parents=True, exist_ok=True)
        (source / f"{split}.csv").write_text(header + "".join(lines))
    _put(source, kinds, files)
    output = tmp_path / "faces"
    result = extract_faces(source, output, SETTINGS, workers=0)

    faces = load_source(output)
    assert faces.layout == "140k-csv"
    assert faces.counts() == {split: {"real": 1, "fake": 1} for split in ("train", "valid", "test")}
    with open(output / "train.csv", newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [(r["label"], r["label_str"], r["path"]) for r in written] == [("1", "real", "train/real/train0.png"), ("0", "fake", "train/fake/train1.png")]
    assert (output / "real_vs_fake" / "real-vs-fake" / "train" / "real" / "train0.png").is_file()
    assert result.no_face == 1


def test_cli_prints_a_summary_and_errors_in_one_line(tmp_path, files, capsys):
    from defax_keras.cli import main

    source = tmp_path / "photos"
    _put(source, {"real/one.jpg": "one", "fake/two.jpg": "two", "fake/none.png": "none"}, files)
    output = tmp_path / "faces"
    code = main(["faces", "extract", str(source), "--output", str(output), "--all-faces", "--crop-size", "48", "--min-size", "30",
                 "--alignment", "box", "--margin", "1.5", "--workers", "0"])
    out = capsys.readouterr().out
    assert code == 0
    assert "crops: 3 (3 written now)" in out and "photos with no face: 1" in out and "photos with several faces: 1 (all kept)" in out
    assert FaceSettings.load(output) == FaceSettings(mode="all", crop_size=48, min_size=30, alignment="box", margin=1.5)

    assert main(["faces", "extract", str(source), "--output", str(source / "faces")]) == 2
    assert "is inside the source dataset" in capsys.readouterr().err
    assert main(["faces", "extract", str(tmp_path / "nowhere"), "--output", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "data path not found" in err and err.count("\n") == 1


def test_training_copies_the_face_settings_into_the_run(tiny_demo, tmp_path):
    from defax_keras.training.trainer import train

    data = tmp_path / "faces"
    shutil.copytree(tiny_demo, data)
    settings = FaceSettings(mode="largest", alignment="box", margin=1.6, crop_size=48)
    settings.save(data)
    result = train("simple_cnn_nano", data=str(data), output=tmp_path / "run", epochs=1, batch_size=8, augment=False,
                   jit_compile=False, tensorboard=False, image_size=32, verbose=0)
    assert FaceSettings.load(result.run_dir) == settings
    assert FaceSettings.for_model(result.model_path) == settings
