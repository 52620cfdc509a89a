"""Face detection, alignment and per-photo scoring, on real photos shipped inside installed packages."""

from __future__ import annotations

import io
import json
import tracemalloc

import numpy as np
import pytest
from helpers import encode, jpeg_with_orientation, run_on_backend
from photos import ASTRONAUT_FACE, GRACE_HOPPER_FACE, astronaut, background, composite, face_patch, grace_hopper, iou, two_faces
from PIL import Image

from defax_keras.data.files import decode_image_bytes
from defax_keras.data.formats import decode_with_pil
from defax_keras.errors import DefaxError
from defax_keras.faces import (
    NO_FACE,
    Face,
    FaceDetector,
    FaceScorer,
    FaceSettings,
    align_face,
    box_quad,
    ffhq_quad,
    landmarks_in_crop,
    looks_aligned,
    warp_quad,
)
from defax_keras.faces import detector as detector_module


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


def eye_angle(face) -> float:
    (lx, ly), (rx, ry) = face.landmarks["left_eye"], face.landmarks["right_eye"]
    return float(np.degrees(np.arctan2(ry - ly, rx - lx)))


@pytest.mark.parametrize("photo, expected", [(astronaut, ASTRONAUT_FACE), (grace_hopper, GRACE_HOPPER_FACE)], ids=["astronaut", "grace_hopper"])
def test_one_face_in_each_shipped_photo(detector, photo, expected):
    faces = detector.detect(photo())
    assert len(faces) == 1
    assert iou(faces[0].box, expected) >= 0.5
    assert faces[0].confidence >= 0.9
    x1, y1, x2, y2 = faces[0].box
    for x, y in faces[0].landmarks.values():  # landmarks inside the face
        assert x1 <= x <= x2 and y1 <= y <= y2


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
@pytest.mark.parametrize("angle", [-30, -12, 0, 20, 30])
def test_composites_boxes_and_level_eyes_after_alignment(detector, name, angle):
    """Faces pasted at a known place, scale and rotation: found there, and the FFHQ crop levels the eyes."""
    centre = {"astronaut": (420, 330), "grace_hopper": (880, 560)}[name]
    size = 150 if angle % 20 else 210
    photo, boxes = composite([(name, *centre, size, angle)])
    faces = detector.detect(photo)
    assert len(faces) == 1
    assert iou(faces[0].box, boxes[0]) >= 0.5
    assert abs(eye_angle(faces[0]) - (-angle)) < 8  # PIL rotates counter-clockwise: the eye line tilts by -angle
    crop = align_face(photo, faces[0], 256)
    again = detector.detect(crop)  # an independent look at the crop: where are the eyes now?
    assert len(again) == 1
    assert abs(eye_angle(again[0])) <= 3.0


def test_two_faces_largest_first(detector):
    photo, boxes = two_faces()
    faces = detector.detect(photo)
    assert len(faces) == 2
    assert faces[0].size >= faces[1].size
    # The larger pasted face (Grace Hopper, right) comes first.
    assert iou(faces[0].box, boxes[1]) >= 0.5 and iou(faces[1].box, boxes[0]) >= 0.5


def test_no_face_in_a_faceless_photo(detector):
    assert detector.detect(background(800, 600)) == []
    assert detector.detect(np.zeros((12, 12, 3), np.uint8)) == []  # smaller than any face


def test_faces_below_the_minimum_size_are_skipped():
    photo, boxes = composite([("astronaut", 300, 300, 36, 0), ("grace_hopper", 800, 450, 160, 0)], size=(1100, 800))
    small_too = FaceDetector(min_size=24).detect(photo)
    assert len(small_too) == 2 and iou(small_too[1].box, boxes[0]) >= 0.5
    large_only = FaceDetector(min_size=60).detect(photo)
    assert len(large_only) == 1 and iou(large_only[0].box, boxes[1]) >= 0.5


def test_minimum_confidence_filters(detector):
    assert FaceDetector(min_confidence=1.0).detect(astronaut()) == []


def test_exif_rotated_photo_is_detected_upright(detector):
    """A camera JPEG stored sideways with orientation 6: decoded upright, the face lands in its upright box."""
    upright = astronaut()
    stored = np.rot90(upright, k=1)  # orientation 6 means: turn 90 degrees clockwise to display
    data = jpeg_with_orientation(stored, 6)
    decoded = decode_with_pil(data)
    assert decoded.shape == upright.shape
    faces = detector.detect(decoded)
    assert len(faces) == 1 and iou(faces[0].box, ASTRONAUT_FACE) >= 0.5
    # and the scorer takes the same path from the encoded bytes
    seen = []
    scorer = FaceScorer(lambda pixels: seen.append(pixels.shape) or np.full(len(pixels), 0.25), 64, FaceSettings(mode="all"), detector)
    (score,) = scorer.score([data])
    assert score.scored == "faces" and len(score.faces) == 1 and iou(score.faces[0].face.box, ASTRONAUT_FACE) >= 0.5
    assert seen == [(1, 64, 64, 3)]


@pytest.mark.parametrize("mode", ["L", "I;16"])
def test_grayscale_and_16_bit_photos(detector, mode):
    grey = np.asarray(Image.fromarray(grace_hopper()).convert("L"))
    picture = Image.fromarray(grey) if mode == "L" else Image.fromarray(grey.astype(np.uint16) * 257)
    assert picture.mode == mode
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    decoded = decode_with_pil(buffer.getvalue())
    assert decoded.shape == grace_hopper().shape and decoded.dtype == np.uint8
    faces = detector.detect(decoded)
    assert len(faces) == 1 and iou(faces[0].box, GRACE_HOPPER_FACE) >= 0.5


def photo_with_face(width, height, face_size, left, top):
    photo = np.full((height, width, 3), 90, np.uint8)
    photo[:, :, 2] = np.linspace(60, 200, width).astype(np.uint8)[None, :]
    patch, (fx1, fy1, fx2, fy2) = face_patch("grace_hopper")
    scale = face_size / max(fx2 - fx1, fy2 - fy1)
    side = round(patch.shape[0] * scale)
    photo[top : top + side, left : left + side] = np.asarray(Image.fromarray(patch).resize((side, side), Image.LANCZOS))
    return photo, (left + fx1 * scale, top + fy1 * scale, left + fx2 * scale, top + fy2 * scale)


def peak_memory(function, *args):
    tracemalloc.start()
    try:
        return function(*args), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_huge_photo_boxes_in_original_coordinates_with_bounded_memory(monkeypatch):
    """6000x4000: the networks only see a copy at most max_side long, boxes come back in full-size pixels,
    and detection needs no more memory than in a photo a ninth of the size scaled to the same copy."""
    photo, expected = photo_with_face(6000, 4000, 700, 3900, 1800)
    seen = []
    original = detector_module.run_mtcnn
    monkeypatch.setattr(detector_module, "run_mtcnn", lambda mtcnn, image, threshold: seen.append(image.shape) or original(mtcnn, image, threshold))
    detector = FaceDetector(max_side=1024, in_process=True)
    small, _ = photo_with_face(2048, 1366, 240, 1300, 600)
    detector.detect(small)  # build the networks before measuring
    _, small_peak = peak_memory(detector.detect, small)
    faces, peak = peak_memory(detector.detect, photo)
    assert seen[-1][:2] == seen[-2][:2] and max(seen[-1][:2]) <= 1024
    assert len(faces) == 1 and iou(faces[0].box, expected) >= 0.5
    assert peak < 1.2 * small_peak + 2e6, f"{peak / 1e6:.0f} MB for the large photo, {small_peak / 1e6:.0f} MB for the small one"
    crop, align_peak = peak_memory(align_face, photo, faces[0], 256)
    assert crop.shape == (256, 256, 3)
    assert align_peak < photo.nbytes / 8  # only the face's neighbourhood is copied


# ---------------------------------------------------------------- alignment


def upright_landmarks(cx=100.0, cy=100.0, eye_gap=40.0, mouth_drop=44.0):
    half = eye_gap / 2
    return {
        "left_eye": (cx - half, cy),
        "right_eye": (cx + half, cy),
        "nose": (cx, cy + mouth_drop / 2),
        "mouth_left": (cx - half * 0.8, cy + mouth_drop),
        "mouth_right": (cx + half * 0.8, cy + mouth_drop),
    }


def test_ffhq_quad_upright_face_matches_the_recipe_by_hand():
    """Eyes 40 px apart, mouth 44 px below: x = (40 + 44) -> scaled to max(2 * 40, 1.8 * 44) = 80; centre 4.4 px below the eyes."""
    quad = ffhq_quad(upright_landmarks())
    expected = np.array([[20, 24.4], [20, 184.4], [180, 184.4], [180, 24.4]])
    np.testing.assert_allclose(quad, expected, atol=1e-9)


@pytest.mark.parametrize("angle", [-30, 10, 25])
def test_ffhq_quad_turns_with_the_face(angle):
    theta = np.radians(angle)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    turned = {k: tuple(rotation @ (np.asarray(v) - 100) + 100) for k, v in upright_landmarks().items()}
    quad = ffhq_quad(turned)
    top = quad[3] - quad[0]
    assert np.degrees(np.arctan2(top[1], top[0])) == pytest.approx(angle, abs=1e-6)
    np.testing.assert_allclose(quad, (rotation @ (ffhq_quad(upright_landmarks()) - 100).T).T + 100, atol=1e-9)


def test_landmarks_land_where_the_ffhq_template_puts_them():
    """In the FFHQ crop the eyes sit 3/8 and 5/8 across, the same height; the mouth centre straight below."""
    face = Face((60, 60, 140, 160), 0.99, upright_landmarks())
    points = landmarks_in_crop(face, ffhq_quad(face.landmarks), 256)
    assert points["left_eye"] == pytest.approx((96.0, 0.4725 * 256), abs=0.5)
    assert points["right_eye"] == pytest.approx((160.0, 0.4725 * 256), abs=0.5)
    mouth_x = (points["mouth_left"][0] + points["mouth_right"][0]) / 2
    assert mouth_x == pytest.approx(128.0, abs=1e-6)


def test_box_quad_is_a_square_with_margin():
    np.testing.assert_allclose(box_quad((10, 20, 50, 100), 1.3), [[-22, 8], [-22, 112], [82, 112], [82, 8]])


def test_warp_is_exact_inside_and_mirrors_outside():
    image = np.random.default_rng(0).integers(0, 256, (100, 120, 3), dtype=np.uint8)
    inside = np.array([[10, 20], [10, 84], [74, 84], [74, 20]], float)
    np.testing.assert_array_equal(warp_quad(image, inside, 64), image[20:84, 10:74])
    corner = np.array([[-10, -10], [-10, 30], [30, 30], [30, -10]], float)
    crop = warp_quad(image, corner, 40)
    np.testing.assert_array_equal(crop[10:, 10:], image[:30, :30])
    np.testing.assert_array_equal(crop[:10, 10:], image[:10, :30][::-1])  # mirrored rows above the photo
    assert warp_quad(image, corner + 1000, 16).max() == 0  # nothing of the photo inside


def test_box_alignment_crops_the_box(detector):
    photo = astronaut()
    face = detector.detect(photo)[0]
    crop = align_face(photo, face, 128, alignment="box", margin=1.0)
    x1, y1, x2, y2 = face.box
    side = max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    reference = np.asarray(Image.fromarray(photo).crop((round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2))).resize((128, 128), Image.BICUBIC))
    assert np.abs(crop.astype(int) - reference.astype(int)).mean() < 6


# ---------------------------------------------------------------- scoring


def jpeg(array) -> bytes:
    return encode(array, "JPEG", quality=95)


class Recorder:
    """A stand-in model: P(fake) from each input's mean brightness; remembers its inputs."""

    def __init__(self):
        self.inputs = []

    def __call__(self, pixels):
        self.inputs.extend(np.asarray(pixels))
        return np.asarray(pixels, np.float64).mean(axis=(1, 2, 3)) / 255.0


@pytest.mark.parametrize("how", ["max", "mean"])
def test_photo_score_aggregates_its_faces(detector, how):
    photo, boxes = two_faces()
    model = Recorder()
    (score,) = FaceScorer(model, 96, FaceSettings(mode="all", aggregate=how), detector).score([jpeg(photo)])
    assert len(score.faces) == 2
    decoded = decode_with_pil(jpeg(photo))
    expected = []
    for face in detector.detect(decoded):  # the reference: crop and score each face by hand
        crop = align_face(decoded, face, 256)
        expected.append(np.asarray(Image.fromarray(crop).crop((16, 16, 240, 240)).resize((96, 96), Image.BILINEAR), np.float64).mean() / 255)
    np.testing.assert_allclose([f.p_fake for f in score.faces], expected, atol=0.01)
    assert score.p_fake == pytest.approx(max(expected) if how == "max" else np.mean(expected), abs=0.01)
    record = score.record(threshold=0.5)
    assert [f["p_fake"] for f in record["faces"]] == [round(f.p_fake, 6) for f in score.faces]
    assert record["label"] == ("fake" if score.p_fake >= 0.5 else "real")


def test_largest_keeps_one_face(detector):
    photo, boxes = two_faces()
    (score,) = FaceScorer(Recorder(), 64, FaceSettings(mode="largest"), detector).score([jpeg(photo)])
    assert len(score.faces) == 1 and iou(score.faces[0].face.box, boxes[1]) >= 0.5


def test_no_face_is_a_result_or_scored_whole(detector):
    data = jpeg(background(640, 480))
    (reported,) = FaceScorer(Recorder(), 64, FaceSettings(mode="all"), detector).score([data])
    assert reported.p_fake is None and reported.scored == "no-face"
    assert reported.record(0.5) == {"label": NO_FACE, "p_real": None, "p_fake": None, "faces": []}
    model = Recorder()
    (whole,) = FaceScorer(model, 64, FaceSettings(mode="all", no_face="whole"), detector).score([data])
    np.testing.assert_array_equal(model.inputs[0], decode_image_bytes(data, 64))
    assert whole.p_fake == pytest.approx(model.inputs[0].mean() / 255) and whole.record(0.5)["face_note"]


def test_auto_scores_aligned_crops_whole_exactly_like_off(tiny_demo):
    """On 140K-style square crops, `auto` runs no detector and feeds the model what `off` does."""
    files = sorted(p for p in tiny_demo.rglob("*") if p.suffix.lower() in (".jpg", ".png"))[:6]

    class NoDetector:
        def detect(self, image):
            raise AssertionError("auto must not detect faces in an aligned crop")

    auto_model, off_model = Recorder(), Recorder()
    auto = FaceScorer(auto_model, 40, FaceSettings(mode="auto"), NoDetector()).score(files)
    off = FaceScorer(off_model, 40, FaceSettings(mode="off"), NoDetector()).score(files)
    assert [s.record(0.5) for s in auto] == [s.record(0.5) for s in off]
    for path, pixels in zip(files, auto_model.inputs):
        np.testing.assert_array_equal(pixels, decode_image_bytes(path.read_bytes(), 40))


def test_auto_detects_in_photos_that_are_not_crops(detector):
    assert looks_aligned(256, 256) and looks_aligned(1024, 1000) and not looks_aligned(1280, 886) and not looks_aligned(2048, 2048)
    (score,) = FaceScorer(Recorder(), 64, FaceSettings(mode="auto"), detector).score([jpeg(two_faces()[0])])
    assert score.scored == "faces" and len(score.faces) == 2


def test_unreadable_inputs_are_errors_not_crashes(tmp_path, detector):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    results = FaceScorer(Recorder(), 64, FaceSettings(mode="all"), detector).score([broken, tmp_path / "missing.png", b"text"])
    assert all(r.error and r.p_fake is None for r in results)
    assert "error" in results[0].record(0.5)


# ---------------------------------------------------------------- settings


def test_settings_validate_and_round_trip(tmp_path):
    with pytest.raises(DefaxError, match="mode='sometimes' is not one of auto, off, largest, all"):
        FaceSettings(mode="sometimes")
    with pytest.raises(DefaxError, match="min_size must be an integer of at least 8"):
        FaceSettings(min_size=2)
    with pytest.raises(DefaxError, match="did you mean 'crop_size'"):
        FaceSettings.from_dict({"crop_sise": 128})
    settings = FaceSettings(mode="largest", alignment="box", crop_size=128)
    settings.save(tmp_path)
    assert json.loads((tmp_path / "faces.json").read_text())["alignment"] == "box"
    assert FaceSettings.load(tmp_path) == settings
    assert FaceSettings.for_model(tmp_path / "model.keras") == settings  # a file in a run directory
    assert FaceSettings.for_model(tmp_path / "other" / "model.keras") == FaceSettings()
    assert settings.replace(mode=None, min_size=64) == FaceSettings(mode="largest", alignment="box", crop_size=128, min_size=64)


def test_detection_under_jax_runs_in_a_tensorflow_worker():
    script = """
import json, sys
sys.path.insert(0, "tests")
import keras, numpy as np
from photos import ASTRONAUT_FACE, iou, astronaut, two_faces
from defax_keras.faces import FaceDetector, FaceScorer, FaceSettings
from helpers import encode
with FaceDetector() as detector:
    faces = detector.detect(astronaut())
    scorer = FaceScorer(lambda x: keras.ops.convert_to_numpy(keras.ops.mean(x, axis=(1, 2, 3))) / 255, 64, FaceSettings(mode="all"), detector)
    (score,) = scorer.score([encode(two_faces()[0], "JPEG")])
    print(json.dumps({"backend": keras.config.backend(), "in_process": detector.in_process, "faces": len(faces),
                      "iou": iou(faces[0].box, ASTRONAUT_FACE), "group": len(score.faces), "p_fake": score.p_fake}))
"""
    result = run_on_backend("jax", script, timeout=300)
    assert result["backend"] == "jax" and result["in_process"] is False
    assert result["faces"] == 1 and result["iou"] >= 0.5
    assert result["group"] == 2 and 0 < result["p_fake"] < 1
