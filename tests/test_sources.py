import csv
import json
from collections import Counter

import pytest
from helpers import decompression_bomb_png, encode, make_split_dataset, pattern, write, write_image

from defax_keras.data.manifest import parse_label, stratified_split
from defax_keras.data.sources import load_source
from defax_keras.errors import DataError


def labels_by_name(source, split):
    return {p.split("/")[-2] + "/" + p.split("/")[-1]: s for p, s in ((x.path, x.label) for x in source.split(split))}


def write_140k(root, per_class=3):
    """The Kaggle 140K layout: CSVs at the top (label 1 = real), images below."""
    image_root = root / "real_vs_fake" / "real-vs-fake"
    for split in ("train", "valid", "test"):
        rows = []
        for cls in ("real", "fake"):
            for i in range(per_class):
                relative = f"{split}/{cls}/{cls}{i}.jpg"
                write_image(image_root / relative, seed=i)
                rows.append([len(rows), f"/orig/{cls}{i}.png", f"{cls}{i}", 1 if cls == "real" else 0, cls, relative])
        with open(root / f"{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["", "original_path", "id", "label", "label_str", "path"])
            writer.writerows(rows)
    return root


def test_140k_csv_label_mapping(tmp_path):
    source = load_source(write_140k(tmp_path))
    assert source.layout == "140k-csv"
    assert source.counts() == {s: {"real": 3, "fake": 3} for s in ("train", "valid", "test")}
    for sample in source.samples:  # CSV label 1 = real must become class 0
        assert sample.label == (0 if "/real/" in sample.path else 1)


def test_140k_contradictory_label_str_is_an_error(tmp_path):
    root = write_140k(tmp_path)
    text = (root / "train.csv").read_text().replace(",1,real,", ",1,fake,", 1)
    (root / "train.csv").write_text(text)
    with pytest.raises(DataError, match="label 1 = real"):
        load_source(root)


def test_140k_from_inner_folder_uses_split_folders(tmp_path):
    write_140k(tmp_path)
    source = load_source(tmp_path / "real_vs_fake")  # descends into real-vs-fake/
    assert source.layout == "split-folders"
    assert len(source) == 18


def test_140k_missing_rows_reported(tmp_path):
    root = write_140k(tmp_path)
    (root / "real_vs_fake/real-vs-fake/test/fake/fake0.jpg").unlink()
    source = load_source(root)
    assert [(s.path, s.reason) for s in source.skipped] == [("test/fake/fake0.jpg", "missing file")]
    assert source.counts()["test"] == {"real": 3, "fake": 2}


@pytest.mark.parametrize(
    "splits, classes",
    [
        (("train", "valid", "test"), ("real", "fake")),
        (("Train", "Validation", "Test"), ("Real", "Fake")),
        (("train", "val", "test"), ("training_real", "training_fake")),
    ],
)
def test_split_folder_spellings(tmp_path, splits, classes):
    source = load_source(make_split_dataset(tmp_path, splits, classes, per_class=2))
    assert source.layout == "split-folders"
    assert source.splits == ("train", "valid", "test")
    assert source.counts()["valid"] == {"real": 2, "fake": 2}
    for sample in source.samples:
        assert sample.label == (0 if "real" in sample.path.lower().split("/")[-2] else 1)
    assert source.split("val") == source.split("Validation") == source.split("valid")


def test_missing_split_is_a_clear_error(tmp_path):
    source = load_source(make_split_dataset(tmp_path, ("train", "test"), per_class=2))
    with pytest.raises(DataError, match="split 'valid' is empty or missing.*has: train, test"):
        source.split("valid")


def make_flat(root, real=20, fake=30):
    for i in range(real):
        write_image(root / "real" / f"r{i:02d}.png", "PNG", seed=i)
    for i in range(fake):
        write_image(root / "fake" / f"f{i:02d}.png", "PNG", seed=100 + i)
    return root


def test_flat_class_folders_stratified_split(tmp_path):
    source = load_source(make_flat(tmp_path / "data"), seed=7)
    assert source.layout == "class-folders"
    assert source.counts() == {
        "train": {"real": 14, "fake": 21},
        "valid": {"real": 4, "fake": 6},
        "test": {"real": 2, "fake": 3},
    }


def test_flat_split_is_seeded_and_saved(tmp_path):
    data = make_flat(tmp_path / "data")
    run = tmp_path / "run"
    first = load_source(data, manifest_dir=run, seed=3)
    again = load_source(data, seed=3)
    other = load_source(data, seed=4)
    splits = lambda s: {x.path: x.split for x in s.samples}  # noqa: E731
    assert splits(first) == splits(again)
    assert splits(first) != splits(other)
    manifest = run / "split_manifest.csv"
    assert first.manifest_path == str(manifest)
    rows = list(csv.DictReader(open(manifest)))
    assert Counter(r["split"] for r in rows) == Counter(x.split for x in first.samples)
    # New files later do not reshuffle the saved split.
    write_image(data / "real" / "r99.png", "PNG", seed=999)
    reloaded = load_source(data, manifest_dir=run, seed=3)
    assert splits(reloaded) == splits(first)
    # The saved manifest is itself a dataset source.
    assert splits(load_source(manifest)) == splits(first)


def test_csv_manifest_with_path_and_label(tmp_path):
    for i in range(4):
        write_image(tmp_path / "imgs" / f"{i}.jpg", seed=i)
    lines = ["path,label,split"] + [f"imgs/{i}.jpg,{i % 2},{'train' if i < 2 else 'test'}" for i in range(4)]
    write(tmp_path / "list.csv", "\n".join(lines).encode())
    source = load_source(tmp_path / "list.csv")
    assert [(s.path.split("/")[-1], s.label, s.split) for s in source.samples] == [
        ("0.jpg", 0, "train"), ("1.jpg", 1, "train"), ("2.jpg", 0, "test"), ("3.jpg", 1, "test"),
    ]


def test_hard_set_data_csv(tmp_path):
    """Fake-vs-Real-Faces (Hard): ids without extension, string labels, no split."""
    rows = ["images_id,label"]
    for i in range(10):
        cls = "fake" if i < 6 else "real"
        write_image(tmp_path / cls / f"{cls}_{i}.jpg", seed=i, size=(30, 30))
        rows.append(f"{cls}_{i},{cls}")
    write(tmp_path / "data.csv", "\n".join(rows).encode())
    source = load_source(tmp_path)
    assert source.layout == "csv-manifest (data.csv)"
    assert len(source) == 10 and not source.skipped
    assert all(s.label == (1 if "fake_" in s.path else 0) for s in source.samples)
    assert sum(source.counts()[s]["fake"] for s in source.splits) == 6


def test_bad_files_are_skipped_and_listed(tmp_path):
    root = make_split_dataset(tmp_path, per_class=3)
    bad = {
        "train/real/empty.jpg": b"",
        "train/fake/text.jpg": b"this is a text file",
        "valid/real/cut.jpg": encode(pattern(), "JPEG")[:200],
        "test/fake/bomb.png": decompression_bomb_png(),
    }
    for name, data in bad.items():
        write(root / name, data)
    write(root / "train" / "real" / "notes.txt", b"not an image")
    source = load_source(root)
    assert len(source) == 18
    reasons = {s.path.replace(str(root) + "/", ""): s.reason for s in source.skipped}
    assert set(reasons) == set(bad)
    assert "empty" in reasons["train/real/empty.jpg"] and "too large" in reasons["test/fake/bomb.png"]
    report = source.report()
    assert report["skipped_count"] == 4 and report["ignored_non_image_files"] == 1
    json.dumps(report)


def test_unknown_layout_lists_what_was_found(tmp_path):
    (tmp_path / "cats").mkdir()
    write_image(tmp_path / "cats" / "a.jpg")
    write(tmp_path / "readme.txt", b"hi")
    with pytest.raises(DataError) as info:
        load_source(tmp_path)
    message = str(info.value)
    assert "unrecognised dataset layout" in message and "cats" in message and "readme.txt" in message
    assert "\n" not in message


def test_missing_path_and_non_csv_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_source(tmp_path / "nowhere")
    with pytest.raises(DataError, match="is a file"):
        load_source(write_image(tmp_path / "a.jpg"))


def test_all_files_unreadable(tmp_path):
    write(tmp_path / "real" / "a.jpg", b"")
    write(tmp_path / "fake" / "b.jpg", b"x")
    with pytest.raises(DataError, match="no readable images"):
        load_source(tmp_path)


def test_demo_keyword(tiny_demo, monkeypatch):
    import defax_keras.data.demo as demo

    monkeypatch.setattr(demo, "demo_dataset", lambda: tiny_demo)
    source = load_source("demo")
    assert source.layout == "140k-csv" and len(source) == 64


def test_parse_label():
    assert [parse_label(v) for v in ("real", "FAKE", "0", "1", " Real ")] == [0, 1, 0, 1, 0]
    assert parse_label("1", real_is_one=True) == 0
    with pytest.raises(DataError):
        parse_label("maybe")


def test_stratified_split_fractions_validated():
    with pytest.raises(DataError, match="sum"):
        stratified_split(["a"], [0], (0.5, 0.5, 0.5))
