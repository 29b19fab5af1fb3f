"""`medsynth review SWEEP_DIR`: runs side by side at one epoch (one column per run, the same prompt per row)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from orchestrator.common.errors import MedsynthError
from orchestrator.review.grid import review_sweep
from orchestrator.review.read import is_sweep_dir
from orchestrator.review.draw import plot_loss
from orchestrator.review.write import write_sweep_review
from orchestrator.runs.outputs import Column
from review_helpers import colour, make_run, sample_name, write_events, write_sample
from test_review import Cells
from train_helpers import make_dataset


def sweep_json(root: Path, runs: list[dict]) -> Path:
    path = root / "sweep.json"
    path.write_text(json.dumps({"name": "lr-sweep", "runs": runs}, indent=1), encoding="utf-8")
    return path


@pytest.fixture
def sweep(tmp_path):
    """runs/{lr1,lr2}: lr1 has sampled epochs 1 and 2, lr2 only epoch 1 so far; both two prompts."""
    dataset = make_dataset(tmp_path / "ds")
    runs = tmp_path / "runs"
    for k, (name, lr, epochs) in enumerate((("lr1", "1e-5", (1, 2)), ("lr2", "8e-5", (1,)))):
        run = make_run(tmp_path, dataset, name=name, epochs=2, sets=["num_sample_prompts=2", f"learning_rate={lr}"])
        for epoch in epochs:
            for index in (0, 1):
                write_sample(run, sample_name(epoch=epoch, index=index, ts=f"202611260{epoch}0{index}0{k}",
                                              seed=1000 + index), colour(epoch + 5 * k, index))
    sweep_json(runs, [{"name": "lr1", "path": "lr1", "params": {"learning_rate": 1e-5}, "status": "finished"},
                      {"name": "lr2", "path": "lr2", "params": {"learning_rate": 8e-5}, "status": "running"}])
    return runs


def test_default_comparison_is_the_latest_epoch_every_run_has_sampled(sweep):
    review = review_sweep(sweep)
    assert review.name == "lr-sweep"
    assert review.compared == (Column("epoch", 1),)
    assert [(h.title, h.subtitle) for h in review.grid.headers] == [("lr1", "epoch 1"), ("lr2", "epoch 1")]
    files = [[c.sample.path.name for c in row.cells] for row in review.grid.rows]
    assert files == [[sample_name(epoch=1, index=0, ts="20261126010000", seed=1000),
                      sample_name(epoch=1, index=0, ts="20261126010001", seed=1000)],
                     [sample_name(epoch=1, index=1, ts="20261126010100", seed=1001),
                      sample_name(epoch=1, index=1, ts="20261126010101", seed=1001)]]


def test_epoch_option_compares_at_that_epoch_with_pending_cells(sweep):
    review = review_sweep(sweep, epochs=[2])
    states = [[c.state for c in row.cells] for row in review.grid.rows]
    assert states == [["ok", "pending"], ["ok", "pending"]]
    with pytest.raises(MedsynthError, match=r"no epoch 5 \(sampling points: epoch 1, epoch 2\)"):
        review_sweep(sweep, epochs=[5])


def test_several_epochs_give_one_column_per_run_and_epoch(sweep):
    review = review_sweep(sweep, epochs=[1, 2])
    assert [(h.title, h.subtitle) for h in review.grid.headers] == [
        ("lr1", "epoch 1"), ("lr1", "epoch 2"), ("lr2", "epoch 1"), ("lr2", "epoch 2")]


def test_rows_are_the_same_prompt_in_every_run(sweep):
    review = review_sweep(sweep)
    assert [r.text for r in review.grid.rows] == ["photo of female skin, me1anoma on lower extremity, at age 50",
                                                  "photo of male skin, me1anoma on torso, at age 70"]
    assert review.grid.rows[0].references.group == "female / lower extremity / 50s"
    assert review.grid.rows[1].detail == "seed 1001"


def test_page_and_contact_sheet_put_each_runs_sample_in_its_column(sweep, tmp_path):
    review = review_sweep(sweep)
    written = write_sweep_review(review, sweep)
    page = Cells(written.html.read_text(encoding="utf-8"))
    assert page.cells[(0, 1)]["data-file"] == sample_name(epoch=1, index=0, ts="20261126010001", seed=1000)
    assert page.headers == ["lr1epoch 1", "lr2epoch 1"]
    sheet = cv2.imread(str(written.contact_sheet))
    for (row, col), bgr in {(0, 0): colour(1, 0), (0, 1): colour(6, 0), (1, 1): colour(6, 1)}.items():
        x, y, size = written.sheet.boxes[(row, col)]
        assert np.abs(sheet[y + size // 2, x + size // 2].astype(int) - np.array(bgr)).max() <= 6
    text = written.html.read_text(encoding="utf-8")
    assert 'data-run="lr1"' in text and "8e-05" in text and "<th>learning_rate</th>" in text


def test_sweep_curves_show_one_line_per_run(sweep, tmp_path):
    for k, name in enumerate(("lr1", "lr2")):
        write_events(sweep / name / "logs" / "20261126000000" / "network_train",
                     {"loss/average": [(s, 1.0 + k - 0.01 * s) for s in range(1, 5)],
                      "loss/epoch_average": [(1, 1.0 + k)], "lr/unet": [(s, 1e-5 * s) for s in range(1, 5)]})
    review = review_sweep(sweep)
    drawn = plot_loss({e.name: e.review.scalars for e in review.entries}, tmp_path / "loss.png", show_current=False)
    assert set(drawn) == {"lr1: loss/average", "lr2: loss/average", "lr1: loss/epoch_average",
                          "lr2: loss/epoch_average"}
    assert drawn["lr2: loss/epoch_average"] == ([1], [2.0])


def test_a_run_not_started_yet_has_pending_cells_and_a_skipped_one_missing(sweep):
    runs = json.loads((sweep / "sweep.json").read_text())["runs"]
    runs += [{"name": "lr3", "path": "lr3", "params": {"learning_rate": 4e-7}, "status": "created"},
             {"name": "lr4", "path": "lr4", "params": {"learning_rate": 1e-3}, "status": "skipped"}]
    sweep_json(sweep, runs)
    review = review_sweep(sweep)
    assert [e.status for e in review.entries] == ["finished", "running", "created", "skipped"]
    assert [c.state for c in review.grid.rows[0].cells] == ["ok", "ok", "pending", "missing"]
    written = write_sweep_review(review, sweep)
    assert 'data-run="lr3"' in written.html.read_text(encoding="utf-8")


def test_a_folder_of_run_folders_without_sweep_json_is_a_sweep_with_derived_params(sweep):
    (sweep / "sweep.json").unlink()
    assert is_sweep_dir(sweep) and not is_sweep_dir(sweep / "lr1")
    review = review_sweep(sweep)
    assert review.name == "runs"
    assert [e.name for e in review.entries] == ["lr1", "lr2"]
    assert [e.params for e in review.entries] == [{"learning_rate": 1e-5}, {"learning_rate": 8e-5}]


def test_no_samples_in_any_run_gives_a_page_that_says_so(tmp_path):
    dataset = make_dataset(tmp_path / "ds")
    for name in ("a", "b"):
        make_run(tmp_path, dataset, name=name)
    review = review_sweep(tmp_path / "runs")
    assert review.compared == () and review.notes == ("no run has written samples yet",)
    text = write_sweep_review(review, tmp_path / "runs").html.read_text(encoding="utf-8")
    assert "no run has written samples yet" in text


@pytest.mark.parametrize("content, message", [
    ("{", "sweep.json: not valid JSON"),
    ('{"name": "x"}', "unreadable sweep index"),
    ('{"runs": [{"path": "a"}]}', r"runs\[0\] has no name"),
    ('{"runs": []}', "lists no runs"),
])
def test_a_bad_sweep_json_is_refused_in_one_line(tmp_path, content, message):
    (tmp_path / "sweep.json").write_text(content)
    with pytest.raises(MedsynthError, match=message) as info:
        review_sweep(tmp_path)
    assert "\n" not in str(info.value) and "sweep.json" in str(info.value)
