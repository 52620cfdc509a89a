import json
import subprocess
import sys
from pathlib import Path

from helpers import make_split_dataset, write

from defax_keras.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_data_check_prints_counts_and_writes_report(tmp_path, capsys):
    data = make_split_dataset(tmp_path / "data", per_class=3)
    write(data / "train" / "real" / "broken.jpg", b"")
    # The same bytes in train and test: leakage that must be reported.
    write(data / "test" / "fake" / "leak.jpg", (data / "train" / "fake" / "000.jpg").read_bytes())
    assert main(["data", "check", str(data), "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "split-folders" in out and "broken.jpg: empty file" in out
    assert "1 group(s) span splits (leakage)" in out
    report = json.loads((tmp_path / "out" / "data_report.json").read_text())
    assert report["counts"]["test"] == {"real": 3, "fake": 4}
    assert report["duplicates"]["across_splits"] == 1
    assert report["image_sizes"]["most_common"] == {"40x30": 19}


def test_data_check_json(tmp_path, capsys):
    data = make_split_dataset(tmp_path / "data", per_class=2)
    assert main(["data", "check", str(data), "--json", "--quick"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["total"] == 12 and report["decoded"] is False


def test_data_demo_command(tmp_path, capsys):
    target = tmp_path / "demo"
    args = ["data", "demo", "--output", str(target), "--train", "4", "--valid", "2", "--test", "2", "--image-size", "32"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Demo dataset v1" in out and "16 JPEG images" in out and "140k-csv" in out


def run_cli(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "data.py"), *args], capture_output=True, text=True, timeout=300
    )


def test_user_errors_are_one_line_without_traceback(tmp_path):
    missing = run_cli("check", str(tmp_path / "nowhere"))
    (tmp_path / "odd").mkdir()
    unknown = run_cli("check", str(tmp_path / "odd"))
    for result in (missing, unknown):
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("defax: error: ")
    assert "not found" in missing.stderr and "unrecognised dataset layout" in unknown.stderr


def test_script_wrapper_runs_the_cli(tmp_path):
    data = make_split_dataset(tmp_path / "data", per_class=1)
    result = run_cli("check", str(data), "--quick")
    assert result.returncode == 0, result.stderr
    assert "split-folders" in result.stdout


# --------------------------------------------------------------------------- predict and serve: --faces

FACE = {"box": [235.7, 216.5, 342.8, 360.0], "confidence": 0.999, "landmarks": {"left_eye": [260.0, 270.0]}, "p_fake": 0.25, "label": "real"}
RECORDS = [
    {"path": "group.jpg", "label": "fake", "p_real": 0.2, "p_fake": 0.8, "faces": [{**FACE, "box": [602.5, 228.4, 742.1, 403.5], "p_fake": 0.8, "label": "fake"}, FACE]},
    {"path": "solo.jpg", "label": "real", "p_real": 0.75, "p_fake": 0.25, "faces": [FACE]},
    {"path": "cup.jpg", "label": "no face", "p_real": None, "p_fake": None, "faces": []},
    {"path": "wall.jpg", "label": "real", "p_real": 0.9, "p_fake": 0.1, "faces": [], "face_note": "no face found; the whole image was scored"},
    {"path": "crop.png", "label": "real", "p_real": 0.6, "p_fake": 0.4},
    {"path": "bad.jpg", "error": "not an image"},
]


def test_predict_formats_show_the_faces():
    import csv
    import io

    from defax_keras.cli.predict import format_results

    lines = format_results(RECORDS, "table").splitlines()
    assert lines[0].split() == ["path", "label", "p_real", "p_fake", "faces"]
    assert lines[1].split() == ["group.jpg", "fake", "0.2000", "0.8000", "2"]
    assert lines[2].split() == ["face", "1:", "box", "[602,", "228,", "742,", "404]", "p_fake", "0.8000", "fake"] and lines[2].startswith("  ")
    assert lines[3].strip() == "face 2: box [236, 216, 343, 360]  p_fake 0.2500  real"
    assert lines[4].split() == ["solo.jpg", "real", "0.7500", "0.2500", "1"]  # one face: no face lines
    assert lines[5].split() == ["cup.jpg", "no", "face", "n/a", "n/a", "0"]
    assert lines[6].split()[-1] == "scored)" and lines[6].split()[4] == "0"
    assert lines[7].split() == ["crop.png", "real", "0.6000", "0.4000", "-"]  # scored whole
    assert lines[8].split() == ["bad.jpg", "error:", "not", "an", "image"] and len(lines) == 9
    rows = list(csv.DictReader(io.StringIO(format_results(RECORDS, "csv"))))
    assert [r["faces"] for r in rows] == ["2", "1", "0", "0", "", ""]
    assert rows[3]["face_note"] == "no face found; the whole image was scored" and rows[2]["p_fake"] == ""
    assert json.loads(format_results(RECORDS, "json"))[0]["faces"][1]["box"] == FACE["box"]


def test_face_options_parse_for_predict_and_serve_and_start_from_the_model(tmp_path):
    from defax_keras.cli import build_parser
    from defax_keras.cli.common import face_settings
    from defax_keras.faces import FaceSettings

    parser = build_parser()
    options = ["--faces", "largest", "--face-aggregate", "mean", "--no-face", "whole", "--face-min-size", "24", "--face-min-confidence", "0.8"]
    for command in (["predict", "-m", str(tmp_path), "photo.jpg"], ["serve", "-m", str(tmp_path)]):
        settings = face_settings(parser.parse_args(command + options), tmp_path)
        assert (settings.mode, settings.aggregate, settings.no_face, settings.min_size, settings.min_confidence) == ("largest", "mean", "whole", 24, 0.8)
        assert face_settings(parser.parse_args(command), tmp_path) == FaceSettings()  # no faces.json: the defaults (auto)
    FaceSettings(mode="off", margin=1.5).save(tmp_path)
    args = parser.parse_args(["predict", "-m", str(tmp_path), "photo.jpg", "--face-aggregate", "mean"])
    assert face_settings(args, tmp_path) == FaceSettings(mode="off", margin=1.5, aggregate="mean")  # the run's own, then the command line


def test_bad_face_options_are_one_line_errors(tmp_path):
    bad_choice = subprocess.run(
        [sys.executable, "-m", "defax_keras.cli", "predict", "-m", str(tmp_path), "x.jpg", "--faces", "bogus"], capture_output=True, text=True, timeout=300
    )
    assert bad_choice.returncode == 2 and "Traceback" not in bad_choice.stderr
    message = bad_choice.stderr.strip().splitlines()[-1]  # after argparse's usage lines
    assert message.startswith("defax predict: error: argument --faces: invalid choice: 'bogus' (choose from ")
    assert all(mode in message for mode in ("auto", "off", "largest", "all"))
    image = write(tmp_path / "x.jpg", b"")
    bad_value = subprocess.run(
        [sys.executable, "-m", "defax_keras.cli", "predict", "-m", str(tmp_path), str(image), "--face-min-confidence", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert bad_value.returncode == 2
    assert bad_value.stderr.strip().splitlines() == ["defax: error: face setting min_confidence must be in [0, 1], got 2.0"]


def test_predict_command_reports_faces(tmp_path, capsys):
    import keras
    from helpers import encode
    from photos import background, two_faces

    from defax_keras.models import build_model

    keras.utils.set_random_seed(0)
    model = tmp_path / "model.keras"
    build_model("simple_cnn_nano").save(model)
    write(tmp_path / "photos" / "group.jpg", encode(two_faces()[0], "JPEG", quality=92))
    write(tmp_path / "photos" / "cup.jpg", encode(background(400, 300), "JPEG"))
    assert main(["predict", "-m", str(model), str(tmp_path / "photos"), "--format", "json"]) == 0
    captured = capsys.readouterr()
    cup, group = json.loads(captured.out)
    assert cup["label"] == "no face" and len(group["faces"]) == 2
    assert "1 of 2 file(s) with no face found" in captured.err
    assert main(["predict", "-m", str(model), str(tmp_path / "photos" / "group.jpg"), "--faces", "largest", "--format", "csv"]) == 0
    (row,) = csv_rows(capsys.readouterr().out)
    assert row["faces"] == "1" and row["p_fake"] == str(group["faces"][0]["p_fake"])


def csv_rows(text):
    import csv
    import io

    return list(csv.DictReader(io.StringIO(text)))
