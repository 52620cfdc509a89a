"""Video: frame sampling, rotation, tracks, aggregation and bad files, on videos written by the tests with PyAV."""

from __future__ import annotations

import numpy as np
import pytest

av = pytest.importorskip("av")

from helpers import encode  # noqa: E402
from photos import background, iou  # noqa: E402
from videos import moving_faces, set_rotation, write_video  # noqa: E402

from defax_keras.video import VideoFileError, VideoScorer, aggregate_frames, link_tracks, probe, read_frames, sample_indices  # noqa: E402
from defax_keras.video import decode as decode_module  # noqa: E402

CROSSING = (("astronaut", (0.2, 0.4), (0.8, 0.4), 100), ("grace_hopper", (0.8, 0.58), (0.2, 0.58), 110))


@pytest.fixture(scope="module")
def crossing(tmp_path_factory):
    frames, boxes = moving_faces(75, size=(480, 400), people=CROSSING)
    return write_video(tmp_path_factory.mktemp("video") / "crossing.mp4", frames, gop=12), boxes


def brightness(pixels):
    return np.asarray(pixels, np.float64).mean(axis=(1, 2, 3)) / 255


@pytest.mark.parametrize("count, wanted", [(75, 32), (75, 8), (10, 32), (1, 4)])
def test_frame_indices_follow_linspace(tmp_path, count, wanted):
    """Each frame carries its own index drawn on it; the sampled ones are np.linspace's."""
    frames = [np.full((64, 96, 3), (i * 3) % 256, np.uint8) for i in range(count)]
    path = write_video(tmp_path / "count.mp4", frames, gop=5, options={"qp": "0"})
    sampled = list(read_frames(path, wanted))
    expected = np.unique(np.linspace(0, count - 1, wanted).astype(int))
    np.testing.assert_array_equal([f.index for f in sampled], expected)
    np.testing.assert_array_equal(sample_indices(count, wanted), expected)
    # the pixels really are those frames (the grey level encodes the index), and the times are index / fps
    np.testing.assert_allclose([f.image.mean() for f in sampled], (expected * 3) % 256, atol=2)
    np.testing.assert_allclose([f.time for f in sampled], expected / 25, atol=1e-6)


def test_fps_sampling_and_probe(tmp_path):
    frames = [np.full((48, 64, 3), (i * 5) % 256, np.uint8) for i in range(50)]  # 2 s at 25 fps
    path = write_video(tmp_path / "two_seconds.mp4", frames, gop=10, options={"qp": "0"})
    info = probe(path)
    assert (info.width, info.height, info.fps, info.frame_count, info.rotation) == (64, 48, 25.0, 50, 0)
    assert info.duration == pytest.approx(2.0)
    sampled = list(read_frames(path, fps=4))
    on_screen = np.floor(np.arange(0, 2, 0.25) * 25 + 1e-9).astype(int)  # the frame shown at each quarter second
    assert [f.index for f in sampled] == list(on_screen)
    np.testing.assert_allclose([f.time for f in sampled], on_screen / 25, atol=1e-6)
    np.testing.assert_allclose([f.image.mean() for f in sampled], (on_screen * 5) % 256, atol=2)


def test_variable_frame_rate_samples_by_time(tmp_path):
    """Frames 0.04 s apart, then 0.2 s apart: each sample is the frame on screen at its time."""
    path = tmp_path / "vfr.mkv"
    times = np.concatenate([np.arange(0, 1.0, 0.04), 1.01 + np.arange(0, 2.0, 0.2)])
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = __import__("fractions").Fraction(1, 1000)
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 7 % 256, np.uint8), format="rgb24")
            frame.pts = int(round(t * 1000))
            frame.time_base = stream.codec_context.time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    sampled = list(read_frames(path, fps=2))
    targets = np.arange(0, 3.0, 0.5)
    expected = [times[times <= t + 1e-6].max() for t in targets[: len(sampled)]]
    assert len(sampled) >= 5
    np.testing.assert_allclose([f.time for f in sampled], expected, atol=1e-3)


def test_rotation_metadata_is_applied(tmp_path):
    """A phone stores portrait video sideways and tags it; frames come out upright."""
    upright = np.zeros((96, 64, 3), np.uint8)
    upright[:16] = 255  # a white band at the top of the upright picture
    stored = np.rot90(upright, k=1)  # what the phone wrote: turned a quarter counter-clockwise
    path = set_rotation(write_video(tmp_path / "phone.mp4", [stored] * 5), 90)
    info = probe(path)
    assert (info.width, info.height) == (64, 96) and info.rotation % 360 == 270
    frame = next(read_frames(path, 1))
    assert frame.image.shape == (96, 64, 3)
    assert frame.image[:12].mean() > 200 and frame.image[30:].mean() < 40


def test_large_frames_are_scaled_while_decoding(tmp_path):
    frames = [np.full((2160, 3840, 3), 120, np.uint8)] * 2  # 4K
    path = write_video(tmp_path / "uhd.mp4", frames, options={"preset": "ultrafast"})
    images = [f.image for f in read_frames(path, 2, max_side=960)]
    assert [im.shape for im in images] == [(540, 960, 3)] * 2


def test_frames_beyond_the_limit_are_refused_before_decoding(tmp_path, monkeypatch):
    """Frames over MAX_FRAME_PIXELS (8192x8192) are refused from the header; shown here with a lowered limit."""
    path = write_video(tmp_path / "wide.mp4", [np.zeros((64, 96, 3), np.uint8)] * 2)
    monkeypatch.setattr(decode_module, "MAX_FRAME_PIXELS", 64 * 95)
    with pytest.raises(VideoFileError, match="frames too large"):
        list(read_frames(path, 2))


def test_decoding_stops_after_its_budget(tmp_path, monkeypatch):
    """One keyframe and many tiny frames: the decoder gives up after max_decoded frames instead of running on."""
    path = tmp_path / "endless.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=1000)
        stream.width, stream.height, stream.pix_fmt = 2, 2, "yuv420p"
        stream.options = {"g": "100000000", "preset": "ultrafast"}
        frame = av.VideoFrame.from_ndarray(np.zeros((2, 2, 3), np.uint8), format="rgb24")
        for _ in range(20000):
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert probe(path).frame_count == 20000
    decoded = []
    original = decode_module._decode

    def counting(*args, **kwargs):
        for frame in original(*args, **kwargs):
            decoded.append(1)
            yield frame

    monkeypatch.setattr(decode_module, "_decode", counting)
    sampled = list(read_frames(path, 32, max_decoded=3000))
    assert 1 <= len(sampled) < 32 and len(decoded) <= 3000 + 32


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.mp4", "cannot read file"),
        (lambda d: (d / "text.mp4").write_text("hello") and d / "text.mp4", "not a video"),
        (lambda d: (d / "photo.mp4").write_bytes(encode(background(64, 48), "JPEG")) and d / "photo.mp4", "not a video"),
        (lambda d: (d / "junk.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 8) and d / "junk.mp4", "unreadable video"),
    ],
    ids=["missing", "text", "jpeg-named-mp4", "corrupt"],
)
def test_bad_files_are_clear_errors(tmp_path, make, message):
    with pytest.raises(VideoFileError, match=message):
        list(read_frames(make(tmp_path)))
    score = VideoScorer(brightness, 32).score(make(tmp_path))
    assert score.p_fake is None and message in score.error and message in score.record(0.5)["error"]


def test_audio_only_and_empty_files(tmp_path):
    audio = tmp_path / "audio.mp4"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with pytest.raises(VideoFileError, match="no video stream"):
        list(read_frames(audio))
    empty = tmp_path / "empty.mp4"
    with av.open(str(empty), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()
    with pytest.raises(VideoFileError):
        list(read_frames(empty))


def test_truncated_video_gives_the_frames_before_the_break(tmp_path):
    frames = [np.full((64, 96, 3), i * 4, np.uint8) for i in range(60)]
    path = write_video(tmp_path / "whole.mkv", frames, gop=5)  # Matroska stays readable when cut
    data = path.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    sampled = list(read_frames(cut, 10))
    assert 1 <= len(sampled) < 10
    assert [f.index for f in sampled] == list(np.unique(np.linspace(0, 59, 10).astype(int)))[: len(sampled)]


# ---------------------------------------------------------------- aggregation and tracks


def test_aggregations_against_numpy():
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 1, 40)
    assert aggregate_frames(values, "mean") == pytest.approx(np.mean(values))
    assert aggregate_frames(values, "max") == pytest.approx(np.max(values))
    confident_fake = np.concatenate([np.full(15, 0.95), rng.uniform(0.3, 0.6, 15)])  # 15 > 11 and 15 > 30 // 2.5
    assert aggregate_frames(confident_fake, "confident") == pytest.approx(0.95)
    few_high = np.concatenate([np.full(5, 0.95), np.full(25, 0.5)])  # too few confident frames: plain mean
    assert aggregate_frames(few_high, "confident") == pytest.approx(few_high.mean())
    mostly_real = np.concatenate([np.full(28, 0.05), np.full(2, 0.9)])  # over 90% below 0.2: their mean
    assert aggregate_frames(mostly_real, "confident") == pytest.approx(0.05)
    with pytest.raises(ValueError, match="unknown video aggregate"):
        aggregate_frames(values, "median")


def test_tracks_survive_crossing_and_short_gaps():
    a = [(10 + i * 20, 50, 60 + i * 20, 100) for i in range(10)]
    b = [(190 - i * 20, 55, 240 - i * 20, 105) for i in range(10)]
    frames = [[x, y] if i % 2 else [y, x] for i, (x, y) in enumerate(zip(a, b))]
    frames[5] = [frames[5][0]]  # one face hidden behind the other
    ids = link_tracks(frames)
    owner = {0: "b", 1: "a"}  # frame 0 lists b first
    for frame, frame_ids in zip(frames, ids):
        for box, track in zip(frame, frame_ids):
            assert box in (a if owner[track] == "a" else b)
    assert link_tracks([[a[0]], [], [], [], [], [], [a[6]]], max_gap=3) == [[0], [], [], [], [], [], [1]]  # too long away: a new track


def test_video_scoring_timeline_tracks_and_verdict(crossing):
    path, boxes = crossing
    scorer = VideoScorer(brightness, 48, frames=12, aggregate="mean")
    score = scorer.score(path)
    record = score.record(0.5)
    expected_indices = np.unique(np.linspace(0, 74, 12).astype(int))
    assert [f["index"] for f in record["timeline"]] == list(expected_indices)
    np.testing.assert_allclose([f["time"] for f in record["timeline"]], expected_indices / 25, atol=1e-3)
    # two people, two tracks, each followed through the crossing
    assert sorted(t["track"] for t in record["tracks"]) == [0, 1]
    person_of_track = {}
    for frame in score.frames:
        assert len(frame.faces) == 2
        for face, track in zip(frame.faces, frame.tracks):
            person = int(np.argmax([iou(face.face.box, box) for box in boxes[frame.index]]))
            assert iou(face.face.box, boxes[frame.index][person]) >= 0.5
            assert person_of_track.setdefault(track, person) == person  # a track never jumps to the other person
    frame_values = [f.p_fake for f in score.frames if f.p_fake is not None]
    assert score.p_fake == pytest.approx(np.mean(frame_values))
    for frame in score.frames:  # a frame's score is its most suspicious face
        assert frame.p_fake == pytest.approx(max(face.p_fake for face in frame.faces))
    for track, value in score.tracks.items():
        mine = [face.p_fake for f in score.frames for face, t in zip(f.faces, f.tracks) if t == track]
        assert value == pytest.approx(np.mean(mine))


def test_video_without_faces_is_no_face(tmp_path):
    path = write_video(tmp_path / "empty_room.mp4", [background(320, 240)] * 20)
    record = VideoScorer(brightness, 32, frames=4).score(path).record(0.5)
    assert record["label"] == "no face" and record["p_fake"] is None and record["frames"] == 4 and record["frames_scored"] == 0


# ---------------------------------------------------------------- defax predict with videos


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """An untrained simple_cnn_nano saved as .keras: the command's plumbing does not need a trained one."""
    from defax_keras.models import build_model

    path = tmp_path_factory.mktemp("model") / "model.keras"
    build_model("simple_cnn_nano").save(path)
    return path


def test_predict_scores_videos_and_images_by_content(small_model, tmp_path, capsys):
    import json

    from defax_keras.cli import main

    frames, _ = moving_faces(30, size=(320, 240))
    clip = write_video(tmp_path / "in" / "clip.mp4", frames)
    disguised = tmp_path / "in" / "clip_named.jpg"  # a video named like a photo: its content decides
    disguised.write_bytes(clip.read_bytes())
    photo = tmp_path / "in" / "photo_named.mp4"  # and a JPEG named like a video
    photo.write_bytes(encode(frames[0], "JPEG"))
    assert main(["predict", "-m", str(small_model), str(tmp_path / "in"), "--frames", "6", "--video-aggregate", "max",
                 "--format", "json", "--timeline", str(tmp_path / "timelines")]) == 0
    records = {r["path"].rsplit("/", 1)[1]: r for r in json.loads(capsys.readouterr().out)}
    assert set(records) == {"clip.mp4", "clip_named.jpg", "photo_named.mp4"}
    for name in ("clip.mp4", "clip_named.jpg"):
        video = records[name]
        assert video["kind"] == "video" and video["frames"] == 6 and video["aggregate"] == "max"
        assert [f["index"] for f in video["timeline"]] == list(np.linspace(0, 29, 6).astype(int))
        frame_scores = [f["p_fake"] for f in video["timeline"] if f["p_fake"] is not None]
        assert video["p_fake"] == pytest.approx(max(frame_scores), abs=1e-6)
        assert len(video["tracks"]) == 1 and video["tracks"][0]["frames"] == video["frames_scored"]
    assert "kind" not in records["photo_named.mp4"] and records["photo_named.mp4"]["label"] in ("real", "fake", "no face")
    assert sorted(p.name for p in (tmp_path / "timelines").iterdir()) == ["clip.png", "clip_named.png"]
    assert main(["predict", "-m", str(small_model), str(clip), "--frames", "4", "--format", "csv"]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()
    assert header.split(",") == ["path", "kind", "label", "p_real", "p_fake", "faces", "face_note", "frames", "tracks", "error"]
    assert row.split(",")[1] == "video" and row.split(",")[7] == "4" and row.split(",")[8] == "1"


def test_predict_without_pyav_names_the_extra(small_model, tmp_path, monkeypatch, capsys):
    import json

    from defax_keras.cli import main
    from defax_keras.errors import DefaxError
    from defax_keras.video import decode

    clip = write_video(tmp_path / "clip.mp4", moving_faces(5, size=(160, 120))[0])

    def missing():
        raise DefaxError('reading videos needs PyAV: pip install "defax-keras[video]"')

    monkeypatch.setattr(decode, "require_av", missing)
    assert main(["predict", "-m", str(small_model), str(clip), "--format", "json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["error"] == 'reading videos needs PyAV: pip install "defax-keras[video]"'


@pytest.mark.parametrize("argv, message", [(["--frames", "0"], "--frames must be a positive integer"), (["--fps", "-1"], "--fps must be positive")])
def test_predict_video_options_are_checked(small_model, tmp_path, capsys, argv, message):
    from defax_keras.cli import main

    clip = write_video(tmp_path / "clip.mp4", moving_faces(5, size=(160, 120))[0])
    assert main(["predict", "-m", str(small_model), str(clip), *argv]) == 2
    assert message in capsys.readouterr().err
