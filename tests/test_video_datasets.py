"""Video datasets as downloaded (FaceForensics++, Celeb-DF v2, DFDC, folders, CSV) and their evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("av")

import sklearn.metrics as skm  # noqa: E402
from photos import background  # noqa: E402
from videos import moving_faces, write_video  # noqa: E402

from defax_keras.errors import DataError, DefaxError  # noqa: E402
from defax_keras.video.datasets import is_video_dataset, load_video_source  # noqa: E402


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_faceforensics_with_official_splits(tmp_path):
    root = tmp_path / "FaceForensics++"
    for name in ("000", "001", "002", "003"):
        touch(root / "original_sequences/youtube/c23/videos" / f"{name}.mp4")
    for method in ("Deepfakes", "FaceSwap"):
        for name in ("000_003", "003_000", "001_002", "002_001"):
            touch(root / "manipulated_sequences" / method / "c23/videos" / f"{name}.mp4")
    touch(root / "manipulated_sequences/Deepfakes/c40/videos/000_003.mp4")  # another compression: not taken
    (root / "splits").mkdir()
    (root / "splits/train.json").write_text(json.dumps([["000", "003"]]))
    (root / "splits/test.json").write_text(json.dumps([["001", "002"]]))
    source = load_video_source(root)
    assert source.layout == "faceforensics++" and is_video_dataset(root)
    by_name = {(s.path.split("/")[-4] if s.label else "real", s.path.rsplit("/", 1)[1]): s for s in source.samples}
    assert len(source.samples) == 4 + 8
    assert by_name[("real", "000.mp4")].split == "train" and by_name[("real", "002.mp4")].split == "test"
    assert by_name[("Deepfakes", "003_000.mp4")].split == "train" and by_name[("FaceSwap", "001_002.mp4")].split == "test"
    assert by_name[("Deepfakes", "003_000.mp4")].group == by_name[("Deepfakes", "000_003.mp4")].group  # same pair of people
    assert {s.label for s in source.split("test")} == {0, 1} and len(source.split("test")) == 2 + 4
    with pytest.raises(DataError, match="compressions here: c23"):
        load_video_source(root, compression="raw")


def test_faceforensics_without_split_files_is_unsplit(tmp_path):
    root = tmp_path / "ffpp"
    touch(root / "original_sequences/youtube/c23/videos/000.mp4")
    touch(root / "manipulated_sequences/Face2Face/c23/videos/000_001.mp4")
    source = load_video_source(root)
    assert source.splits == [] and [s.label for s in source.split(None)] == [0, 1]


def test_celeb_df_test_list_inverts_its_labels(tmp_path):
    root = tmp_path / "Celeb-DF-v2"
    for relative in ("Celeb-real/id0_0000.mp4", "YouTube-real/00001.mp4", "Celeb-synthesis/id0_id1_0000.mp4", "Celeb-synthesis/id2_id3_0001.mp4"):
        touch(root / relative)
    (root / "List_of_testing_videos.txt").write_text("1 YouTube-real/00001.mp4\n0 Celeb-synthesis/id0_id1_0000.mp4\n")
    source = load_video_source(root)
    labels = {s.path.split("Celeb-DF-v2/")[1]: (s.label, s.split) for s in source.samples}
    assert labels == {
        "Celeb-real/id0_0000.mp4": (0, "train"),
        "YouTube-real/00001.mp4": (0, "test"),
        "Celeb-synthesis/id0_id1_0000.mp4": (1, "test"),
        "Celeb-synthesis/id2_id3_0001.mp4": (1, "train"),
    }
    (root / "List_of_testing_videos.txt").write_text("0 YouTube-real/00001.mp4\n")  # contradicts its folder
    assert [reason for _, reason in load_video_source(root).skipped] == ["List_of_testing_videos.txt labels it fake, its folder real"]


def test_dfdc_metadata(tmp_path):
    part = tmp_path / "dfdc" / "dfdc_train_part_0"
    touch(part / "aaa.mp4")
    touch(part / "bbb.mp4")
    (part / "metadata.json").write_text(json.dumps({
        "aaa.mp4": {"label": "REAL", "split": "train"},
        "bbb.mp4": {"label": "FAKE", "split": "train", "original": "aaa.mp4"},
        "ccc.mp4": {"label": "FAKE", "split": "train", "original": "aaa.mp4"},
    }))
    source = load_video_source(tmp_path / "dfdc")
    assert source.layout == "dfdc"
    assert [(s.path.rsplit("/", 1)[1], s.label, s.split, s.group) for s in source.samples] == [("aaa.mp4", 0, "train", "aaa.mp4"), ("bbb.mp4", 1, "train", "aaa.mp4")]
    assert source.skipped == [(str(part / "ccc.mp4"), "listed in metadata.json, not on disk")]


def test_folders_and_csv(tmp_path):
    root = tmp_path / "clips"
    touch(root / "test/real/a.mp4")
    touch(root / "test/fake/b.webm")
    touch(root / "unlabelled.mp4")
    source = load_video_source(root)
    assert sorted((s.label, s.split) for s in source.samples) == [(0, "test"), (1, "test")]
    assert [reason for _, reason in source.skipped] == ["no class folder (real/fake) above it"]
    csv_path = tmp_path / "videos.csv"
    csv_path.write_text("path,label\nclips/test/real/a.mp4,real\nclips/test/fake/b.webm,fake\n")
    assert is_video_dataset(csv_path)
    assert [s.label for s in load_video_source(csv_path).samples] == [0, 1]
    with pytest.raises(DataError, match="no labelled videos"):
        load_video_source(touch(tmp_path / "empty" / "x.txt").parent)


@pytest.fixture(scope="module")
def video_dataset(tmp_path_factory):
    """Two real and two fake clips with a face, and a faceless one (left out)."""
    root = tmp_path_factory.mktemp("videos") / "clips"
    people = [("astronaut", (0.3, 0.5), (0.7, 0.5), 110), ("grace_hopper", (0.7, 0.5), (0.3, 0.5), 120)]
    for i, (label, person) in enumerate([("real", people[0]), ("real", people[1]), ("fake", people[1]), ("fake", people[0])]):
        frames, _ = moving_faces(20, size=(320, 240), people=(person,))
        if label == "fake":
            frames = [np.clip(f.astype(int) + 40, 0, 255).astype(np.uint8) for f in frames]  # brighter: "faker" for the stand-in model
        write_video(root / label / f"clip{i}.mp4", frames, gop=5)
    write_video(root / "fake" / "empty_room.mp4", [background(320, 240)] * 10)
    return root


class BrightnessModel:
    """A stand-in detector: P(fake) is the mean brightness of the input."""

    image_size = 48
    name = "brightness"

    def predict_on_batch(self, pixels):
        p = np.asarray(pixels, np.float64).mean(axis=(1, 2, 3)) / 255
        return np.stack([1 - p, p], axis=1)


def test_evaluate_videos_metrics_against_sklearn(video_dataset, tmp_path):
    from defax_keras.evaluation.video import evaluate_videos, write_video_evaluation
    from defax_keras.faces import FaceSettings

    result = evaluate_videos(BrightnessModel(), video_dataset, frames=6, faces=FaceSettings(mode="auto"), threshold=0.45)
    assert result.count == 4 and [s["reason"] for s in result.skipped] == ["no face in 6 sampled frames"]
    labels = result.labels
    assert list(labels) == [1, 1, 0, 0] or sorted(labels) == [0, 0, 1, 1]
    assert result.metrics["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, result.p_fake))
    assert result.metrics["accuracy"] == pytest.approx(skm.accuracy_score(labels, result.p_fake >= 0.45))
    assert result.frame_metrics["roc_auc"] == pytest.approx(skm.roc_auc_score(result.frame_labels, result.frame_p_fake))
    assert result.frame_metrics["average_precision"] == pytest.approx(skm.average_precision_score(result.frame_labels, result.frame_p_fake))
    assert result.frame_p_fake.size == 4 * 6
    for score, timeline in zip(result.p_fake, result.timelines):  # each video's score is the mean of its frames'
        assert [index for index, _, _ in timeline] == list(np.linspace(0, 19, 6).astype(int))
        assert score == pytest.approx(np.mean([p for _, _, p in timeline]))
    assert result.metrics["roc_auc"] == 1.0  # the fake clips are brighter
    folder = write_video_evaluation(result, tmp_path / "out")
    assert json.loads((folder / "metrics.json").read_text())["video_level"]["count"] == 4
    assert len((folder / "frames.csv").read_text().splitlines()) == 1 + 24
    assert "empty_room.mp4" in (folder / "report.md").read_text()
    maxed = evaluate_videos(BrightnessModel(), video_dataset, frames=6, aggregate="max", faces=FaceSettings(mode="auto"))
    for score, timeline in zip(maxed.p_fake, maxed.timelines):
        assert score == pytest.approx(max(p for _, _, p in timeline))


def test_evaluate_videos_errors(video_dataset):
    from defax_keras.evaluation.video import evaluate_videos

    with pytest.raises(DefaxError, match="no videos in split 'valid'"):
        evaluate_videos(BrightnessModel(), video_dataset, split="valid")


def test_defax_evaluate_on_video_and_image_datasets_with_the_cross_table(video_dataset, tiny_demo, tmp_path, capsys):
    from defax_keras.cli import main
    from defax_keras.models import build_model

    model = tmp_path / "model.keras"
    build_model("simple_cnn_nano").save(model)
    out = tmp_path / "evaluation"
    assert main(["evaluate", "-m", str(model), "--data", str(video_dataset), "--data", str(tiny_demo), "--frames", "4",
                 "--video-aggregate", "confident", "--bootstrap", "0", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| metric | video level | frame level |" in printed
    metrics = json.loads((out / "clips" / "metrics.json").read_text())
    assert metrics["videos"] == 4 and metrics["frames_per_video"] == 4 and metrics["aggregate"] == "confident"
    assert metrics["frame_level"]["count"] == 16
    rows = (out / "cross_dataset.csv").read_text().splitlines()
    assert rows[1].startswith("clips,2,2,") and rows[2].startswith(f"{tiny_demo.name},")


def test_faces_extract_on_a_video_dataset_keeps_each_video_in_one_split(video_dataset, tmp_path, capsys):
    import csv

    from defax_keras.cli import main
    from defax_keras.data.sources import load_source

    out = tmp_path / "frames"
    assert main(["faces", "extract", str(video_dataset), "-o", str(out), "--frames", "5", "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert "photos with no face: 1" in printed  # the empty room
    with open(out / "frames.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 * 5
    by_video = {}
    for row in rows:
        by_video.setdefault(row["video"], set()).add(row["split"])
        assert (out / row["path"]).is_file() and row["path"].startswith(f"{row['split']}/{row['label']}/")
    assert all(len(splits) == 1 for splits in by_video.values())  # a video's frames never straddle splits
    assert sorted(int(r["frame"]) for r in rows if r["video"].endswith("clip0.mp4")) == list(np.linspace(0, 19, 5).astype(int))
    source = load_source(out)
    assert len(source.samples) == 20 and {s.label for s in source.samples} == {0, 1}
    # resume: one crop removed is the only thing redone
    victim = out / rows[0]["path"]
    victim.unlink()
    assert main(["faces", "extract", str(video_dataset), "-o", str(out), "--frames", "5", "--workers", "0"]) == 0
    assert victim.is_file() and "(1 written now, 4 photo(s) done by an earlier run)" in capsys.readouterr().out
