"""The `medsynth review` command: options, summary line, one-line errors with exit code 1."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from orchestrator.cli.main import main
from orchestrator.runs.folder import running_mark
from orchestrator.runs.record import update_record
from review_helpers import colour, make_run, sample_name, write_sample
from train_helpers import make_dataset


def invoke(*args: str):
    return CliRunner().invoke(main, ["review", *args], catch_exceptions=False)


def test_help_explains_every_option():
    result = invoke("--help")
    assert result.exit_code == 0
    for option in ("--out", "--epoch", "--step", "--references", "--quiet"):
        assert option in result.output


def test_review_of_a_run_writes_the_page_and_prints_a_summary(tmp_path):
    run = make_run(tmp_path, make_dataset(tmp_path / "ds"), epochs=2, sets=["num_sample_prompts=2"])
    write_sample(run, sample_name(epoch=1, index=0, ts="20261126010000", seed=1000), colour(1, 0))
    result = invoke(str(run), "--quiet")
    assert result.exit_code == 0, result.output
    assert "run r1 (running): 2 prompts x 2 sampling points; 1 samples, 3 pending, 0 not sampled" in result.output
    assert (run / "review.html").is_file() and (run / "contact_sheet.png").is_file()


def test_a_run_whose_medsynth_was_killed_is_reported_as_killed_not_pending(tmp_path):
    run = make_run(tmp_path, make_dataset(tmp_path / "ds"), epochs=2, sets=["num_sample_prompts=2"])
    write_sample(run, sample_name(epoch=1, index=0, ts="20261126010000", seed=1000), colour(1, 0))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    update_record(run, status="running", running_mark={**running_mark(), "pid": int(gone.stdout)})
    result = invoke(str(run), "--quiet")
    assert result.exit_code == 0, result.output
    assert "run r1 (killed): 2 prompts x 2 sampling points; 1 samples, 0 pending" in result.output


def test_epoch_and_out_options(tmp_path):
    run = make_run(tmp_path, make_dataset(tmp_path / "ds"), epochs=3, sets=["num_sample_prompts=1"])
    write_sample(run, sample_name(epoch=2, index=0, ts="20261126010000", seed=1000), colour(2, 0))
    out = tmp_path / "out"
    result = invoke(str(run), "--epoch", "2", "--out", str(out), "--quiet", "--references", "0")
    assert result.exit_code == 0, result.output
    assert "1 sampling points; 1 samples, 0 pending" in result.output
    assert (out / "review.html").is_file() and not (run / "review.html").exists()


def test_sweep_folder_is_compared_side_by_side(tmp_path):
    dataset = make_dataset(tmp_path / "ds")
    for k, name in enumerate(("a", "b")):
        run = make_run(tmp_path, dataset, name=name, epochs=2, sets=[f"learning_rate={k + 1}e-5", "num_sample_prompts=1"])
        write_sample(run, sample_name(epoch=1, index=0, ts=f"2026112601000{k}", seed=1000), colour(1, k))
    result = invoke(str(tmp_path / "runs"), "--quiet")
    assert result.exit_code == 0, result.output
    assert "sweep runs: 2 runs x 1 prompts at epoch 1; 2 samples, 0 pending" in result.output


def test_unknown_epoch_is_one_error_line_and_exit_code_1(tmp_path):
    run = make_run(tmp_path, make_dataset(tmp_path / "ds"), epochs=2)
    result = CliRunner().invoke(main, ["review", str(run), "--epoch", "7", "--quiet"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"error: {run}: no epoch 7 (sampling points: epoch 1, epoch 2)"]


def test_a_folder_that_is_no_run_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["review", str(tmp_path / "empty")])
    assert result.exit_code == 1
    assert "not a medsynth run folder (no run.json)" in result.output
    result = CliRunner().invoke(main, ["review", str(tmp_path / "absent")])
    assert result.exit_code == 1 and "no such folder" in result.output


def test_a_broken_sweep_json_is_refused(tmp_path):
    (tmp_path / "sweep.json").write_text(json.dumps({"runs": "nope"}))
    result = CliRunner().invoke(main, ["review", str(tmp_path)])
    assert result.exit_code == 1 and "sweep.json: unreadable sweep index" in result.output
