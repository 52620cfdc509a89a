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
