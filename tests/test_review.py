"""`medsynth review RUN_DIR`: the grid (which sample lands in which cell, in the model, the page and the contact
sheet), labels, training images beside each prompt, curves, settings, and re-running while training runs."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest

from orchestrator.common.errors import MedsynthError
from orchestrator.review.grid import review_run, select_columns
from orchestrator.review.read import expected_columns
from orchestrator.review.draw import plot_loss, plot_lr
from orchestrator.review.write import write_run_review
from orchestrator.runs.outputs import Column
from orchestrator.runs.facts import read_run
from orchestrator.runs.record import update_record
from review_helpers import colour, make_run, make_step_run, sample_name, write_events, write_sample, write_torn_sample
from train_helpers import make_dataset

SCALARS = {
    "loss/current": [(s, 1.0 + 0.5 / s) for s in range(1, 19)],
    "loss/average": [(s, 1.2 - 0.01 * s) for s in range(1, 19)],
    "loss/epoch_average": [(1, 1.15), (2, 1.05)],
    "lr/unet": [(s, 1e-6 * s) for s in range(1, 19)],
}


class Cells(HTMLParser):
    """data-* attributes of the page's grid cells, headers and body."""

    def __init__(self, text: str):
        super().__init__()
        self.cells: dict[tuple[int, int], dict[str, str]] = {}
        self.headers: list[str] = []
        self.settings: dict[str, str] = {}
        self._header: int | None = None
        self._setting: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "td" and "data-state" in a:
            self.cells[(int(a["data-row"]), int(a["data-col"]))] = a
        if tag == "th" and "data-col" in a:
            self._header = int(a["data-col"])
            self.headers.append("")
        if tag == "td" and "data-setting" in a:
            self._setting = a["data-setting"]
            self.settings[self._setting] = ""

    def handle_endtag(self, tag):
        if tag == "th":
            self._header = None
        if tag == "td":
            self._setting = None

    def handle_data(self, data):
        if self._header is not None:
            self.headers[-1] += data
        if self._setting is not None:
            self.settings[self._setting] += data


@pytest.fixture
def run(tmp_path):
    """3 epochs, 2 prompts; epoch 1 and 2 sampled (epoch 2 twice: a resume), epoch 3 being written."""
    dataset = make_dataset(tmp_path / "ds")
    run_dir = make_run(tmp_path, dataset, epochs=3, sets=["num_sample_prompts=2"])
    for epoch in (1, 2):
        for index in (0, 1):
            write_sample(run_dir, sample_name(epoch=epoch, index=index, ts=f"202611260{epoch}0{index}00",
                                              seed=1000 + index), colour(epoch, index))
    write_sample(run_dir, sample_name(epoch=2, index=0, ts="20261126090000", seed=1000), colour(7, 3))
    write_torn_sample(run_dir, sample_name(epoch=3, index=0, ts="20261126100000", seed=1000))
    return run_dir


def with_events(run_dir: Path) -> Path:
    write_events(run_dir / "logs" / "20261126051537" / "network_train", SCALARS)
    return run_dir


def test_grid_puts_the_newest_complete_sample_of_each_epoch_and_prompt_in_its_cell(run):
    review = review_run(run)
    assert review.columns == (Column("epoch", 1), Column("epoch", 2), Column("epoch", 3))
    grid = review.grid(review.columns)
    names = [[c.sample.path.name if c.sample else c.state for c in row.cells] for row in grid.rows]
    assert names == [
        [sample_name(epoch=1, index=0, ts="20261126010000", seed=1000),
         sample_name(epoch=2, index=0, ts="20261126090000", seed=1000), "pending"],
        [sample_name(epoch=1, index=1, ts="20261126010100", seed=1001),
         sample_name(epoch=2, index=1, ts="20261126020100", seed=1001), "pending"],
    ]


def test_page_cells_and_labels(run, tmp_path):
    review = review_run(run)
    written = write_run_review(review, run, columns=review.columns)
    page = Cells(written.html.read_text(encoding="utf-8"))
    assert page.headers == ["epoch 1", "epoch 2", "epoch 3"]
    assert page.cells[(0, 1)]["data-file"] == sample_name(epoch=2, index=0, ts="20261126090000", seed=1000)
    assert page.cells[(1, 0)]["data-file"] == sample_name(epoch=1, index=1, ts="20261126010100", seed=1001)
    assert page.cells[(0, 2)]["data-state"] == page.cells[(1, 2)]["data-state"] == "pending"
    text = written.html.read_text(encoding="utf-8")
    prompts = [p.text for p in read_run(run).prompts]
    assert prompts == ["photo of female skin, me1anoma on lower extremity, at age 50",
                       "photo of male skin, me1anoma on torso, at age 70"]
    for prompt in prompts:
        assert prompt in text
    assert "seed 1000" in text and "seed 1001" in text
    assert not re.search(r"(src|href)=\"(/|[a-z]+:)", text), "links must be relative (offline, movable)"


def test_contact_sheet_cells_show_the_right_samples(run):
    review = review_run(run)
    written = write_run_review(review, run, columns=review.columns)
    sheet = cv2.imread(str(written.contact_sheet))
    assert sheet.shape[:2] == (written.sheet.height, written.sheet.width)
    expected = {(0, 0): colour(1, 0), (0, 1): colour(7, 3), (1, 0): colour(1, 1), (1, 1): colour(2, 1)}
    for (row, col), bgr in expected.items():
        x, y, size = written.sheet.boxes[(row, col)]
        centre = sheet[y + size // 2, x + size // 2].astype(int)
        assert np.abs(centre - np.array(bgr)).max() <= 6, (row, col, centre, bgr)
    x, y, size = written.sheet.boxes[(0, 2)]  # pending: the grey empty cell, not a sample colour
    assert np.abs(sheet[y + 5, x + 5].astype(int) - 236).max() <= 2


def test_training_images_beside_a_prompt_share_its_sex_site_and_age_band(run):
    review = review_run(run)
    first, second = (review.references[i] for i in (0, 1))
    assert first.group == "female / lower extremity / 50s"
    assert {r.image_id for r in first.images} == {"ISIC_0000000", "ISIC_0000001", "ISIC_0000002"}
    assert second.group == "male / torso / 70s"
    assert {r.image_id for r in second.images} == {"ISIC_0000003", "ISIC_0000004"}
    assert all(r.path.is_file() for r in first.images + second.images)
    limited = review_run(run, references=1)
    assert len(limited.references[0].images) == 1 and limited.references[0].total == 3


def test_a_prompt_that_is_no_caption_gets_no_training_images(tmp_path):
    dataset = make_dataset(tmp_path / "ds")
    run_dir = make_run(tmp_path, dataset, sets=['sample_prompts=["a dermoscopy image of melanoma"]'])
    review = review_run(run_dir)
    assert review.references[0].group is None and review.references[0].images == ()
    written = write_run_review(review, run_dir, columns=review.columns)
    assert "no training image with this caption" in written.html.read_text(encoding="utf-8")


def test_curves_plot_the_logged_values(run, tmp_path):
    review = review_run(with_events(run))
    for tag, points in SCALARS.items():
        assert [(p.step, p.value) for p in review.scalars[tag]] == [(s, float(np.float32(v))) for s, v in points]
    drawn = plot_loss({"r1": review.scalars}, tmp_path / "loss.png", show_current=True)
    assert drawn["loss/epoch_average"] == ([1, 2], [float(np.float32(1.15)), float(np.float32(1.05))])
    assert drawn["loss/current"][0] == list(range(1, 19))
    assert set(drawn) == {"loss/current", "loss/average", "loss/epoch_average"}
    lr = plot_lr({"r1": review.scalars}, tmp_path / "lr.png")
    assert lr["lr/unet"][1] == [float(np.float32(1e-6 * s)) for s in range(1, 19)]
    for png in (tmp_path / "loss.png", tmp_path / "lr.png"):
        image = cv2.imread(str(png))
        assert image is not None and image.shape[1] == 1000


def test_curve_plots_are_linked_from_the_page(run):
    review = review_run(with_events(run))
    written = write_run_review(review, run, columns=review.columns)
    assert [p.name for p in written.curves] == ["loss.png", "lr.png"]
    text = written.html.read_text(encoding="utf-8")
    assert 'src="review_files/loss.png"' in text and 'src="review_files/lr.png"' in text


def test_no_events_means_no_curves_and_a_note(tmp_path):
    run_dir = make_run(tmp_path, make_dataset(tmp_path / "ds"))
    review = review_run(run_dir)
    written = write_run_review(review, run_dir, columns=review.columns)
    assert written.curves == ()
    assert "no TensorBoard scalars yet" in written.html.read_text(encoding="utf-8")
    update_record(run_dir, status="finished")
    assert any("no TensorBoard events in logs/" in note for note in review_run(run_dir).notes)


def test_settings_come_from_run_json(run):
    update_record(run, status="failed", exit_code=3)
    review = review_run(with_events(run))
    settings = dict(review.settings)
    record = json.loads((run / "run.json").read_text())
    assert settings["status"] == "failed (exit code 3)"
    assert settings["preset"] == record["preset"] == "default"
    assert settings["learning rate"].startswith(f"{record['schedule']['learning_rate']:.4g}")
    assert settings["batch size"].startswith(str(record["schedule"]["batch_size"]))
    assert settings["epochs"] == f"3 ({record['schedule']['total_steps']} steps)"
    assert settings["optimizer"] == record["config"]["optimizer_type"]
    assert settings["scheduler"].startswith(record["config"]["lr_scheduler"])
    assert settings["final loss (average)"] == f"{np.float32(SCALARS['loss/average'][-1][1]):.4g}"
    page = Cells(write_run_review(review, run, columns=review.columns).html.read_text(encoding="utf-8"))
    assert page.settings["status"] == "failed (exit code 3)"


def test_a_finished_run_marks_unsampled_cells_not_pending(run):
    update_record(run, status="finished")
    review = review_run(run)
    grid = review.grid(review.columns)
    assert [c.state for c in grid.rows[0].cells] == ["ok", "ok", "missing"]


def test_epoch_option_selects_columns_and_refuses_unknown_ones(run):
    review = review_run(run)
    assert select_columns(review.columns, [2], [], where="r1") == [Column("epoch", 2)]
    with pytest.raises(MedsynthError, match=r"r1: no epoch 9 \(sampling points: epoch 1, epoch 2, epoch 3\)"):
        select_columns(review.columns, [9], [], where="r1")


def test_expected_columns_follow_the_sampling_settings(tmp_path):
    dataset = make_dataset(tmp_path / "ds")
    every2 = make_run(tmp_path, dataset, name="a", epochs=5, sets=["sample_every_n_epochs=2", "sample_at_first=true"])
    assert expected_columns(read_run(every2)) == [Column("epoch", 0), Column("epoch", 2), Column("epoch", 4)]
    steps = make_step_run(tmp_path, dataset, name="b", epochs=2, every=4)
    facts = read_run(steps)
    total = facts.record["schedule"]["total_steps"]
    assert expected_columns(facts) == [Column("step", s) for s in range(4, total + 1, 4)]


def test_step_based_samples_fill_step_columns(tmp_path):
    dataset = make_dataset(tmp_path / "ds")
    run_dir = make_step_run(tmp_path, dataset, epochs=2, every=4, sample_at_first=True)
    write_sample(run_dir, sample_name(epoch=0, index=0, ts="20261126010000", seed=1000), colour(0, 0))
    at4 = write_sample(run_dir, sample_name(step=4, index=0, ts="20261126020000", seed=1000), colour(4, 0))
    review = review_run(run_dir)
    assert review.columns[:3] == (Column("epoch", 0), Column("step", 4), Column("step", 8))
    grid = review.grid(review.columns)
    assert grid.rows[0].cells[1].sample.path == at4
    assert grid.headers[0].title == "epoch 0 (before training)" and grid.headers[1].title == "step 4"


def test_rerunning_while_training_picks_up_new_samples_and_leaves_no_temporary_files(run):
    review = review_run(run)
    first = write_run_review(review, run, columns=review.columns)
    assert first.thumbnails_made == 4 + 5  # 4 samples + 5 training images
    write_sample(run, sample_name(epoch=3, index=0, ts="20261126110000", seed=1000), colour(3, 0))
    review = review_run(run)
    second = write_run_review(review, run, columns=review.columns)
    assert second.thumbnails_made == 1
    assert Cells(second.html.read_text(encoding="utf-8")).cells[(0, 2)]["data-state"] == "ok"
    leftovers = [p for p in run.rglob("*") if ".tmp" in p.name]
    assert leftovers == []
    thumbs = list((run / "review_files" / "thumbs").iterdir())
    assert len(thumbs) == 5 + 5


def test_thumbnails_of_replaced_samples_are_removed(run):
    review = review_run(run)
    write_run_review(review, run, columns=review.columns)
    before = {p.name for p in (run / "review_files" / "thumbs").iterdir()}
    (run / "sample" / sample_name(epoch=2, index=0, ts="20261126090000", seed=1000)).unlink()
    review = review_run(run)
    write_run_review(review, run, columns=review.columns)
    after = {p.name for p in (run / "review_files" / "thumbs").iterdir()}
    assert len(before - after) == 1 and next(iter(before - after)).startswith("melanoma_lora_e000002_00_2026112609")


def test_output_can_go_elsewhere_with_relative_links(run, tmp_path):
    out = tmp_path / "elsewhere" / "review"
    review = review_run(run)
    written = write_run_review(review, out, columns=review.columns)
    assert written.html.parent == out and not (run / "review.html").exists()
    page = Cells(written.html.read_text(encoding="utf-8"))
    target = page.cells[(0, 0)]["data-file"]
    hrefs = re.findall(r'href="([^"]+)"', written.html.read_text(encoding="utf-8"))
    full = next(h for h in hrefs if h.endswith(target))
    assert (out / full).resolve() == (run / "sample" / target).resolve()


def test_no_samples_yet_gives_a_page_of_pending_cells(tmp_path):
    run_dir = make_run(tmp_path, make_dataset(tmp_path / "ds"), epochs=2)
    review = review_run(run_dir)
    assert review.notes == ("no samples yet",)
    grid = review.grid(review.columns)
    assert grid.count("pending") == len(grid.rows) * 2 and grid.count("ok") == 0


def test_a_folder_without_run_json_is_refused_in_one_line(tmp_path):
    (tmp_path / "sample").mkdir()
    with pytest.raises(MedsynthError, match=r"not a medsynth run folder \(no run.json\)") as info:
        review_run(tmp_path)
    assert "\n" not in str(info.value)


def test_a_broken_run_json_is_refused(tmp_path):
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(MedsynthError, match=r"run.json: not valid JSON"):
        review_run(tmp_path)


def test_a_moved_dataset_is_a_note_not_an_error(run, tmp_path):
    update_record(run, dataset={"path": str(tmp_path / "gone")})
    review = review_run(run)
    assert review.references == {}
    assert any("training images not shown" in n for n in review.notes)


def test_html_escapes_prompt_text(tmp_path):
    dataset = make_dataset(tmp_path / "ds")
    run_dir = make_run(tmp_path, dataset, sets=['sample_prompts=["skin <script>alert(1)</script> & more"]'])
    review = review_run(run_dir)
    text = write_run_review(review, run_dir, columns=review.columns).html.read_text(encoding="utf-8")
    assert "<script>alert(1)" not in text and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in text


def test_run_folder_files_are_left_alone(run):
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    review = review_run(run)
    write_run_review(review, run, columns=review.columns)
    assert {p: p.read_bytes() for p in before} == before


def test_the_recorded_cpu_run_reviews_with_its_real_settings_and_events(tmp_path):
    """tests/data/cpu_train_run: run.json and TensorBoard events of a real sd-scripts CPU run (no train.toml)."""
    run = tmp_path / "cpu1"
    shutil.copytree(Path(__file__).parent / "data" / "cpu_train_run", run)
    for epoch in (1, 2):
        write_sample(run, sample_name(epoch=epoch, index=0, ts=f"2026112605{16 + epoch}00", seed=1000),
                     colour(epoch, 0))
    review = review_run(run)
    settings = dict(review.settings)
    assert settings["status"] == "finished" and settings["epochs"] == "2 (12 steps)"
    assert settings["learning rate"] == "2e-05 (2e-05 at batch 1, sqrt scaling to 1)"
    assert settings["final loss (average)"] == "1.1"
    assert settings["batch size"] == "1 (--set/medsynth.toml)"
    assert [p.step for p in review.scalars["loss/current"]] == list(range(1, 13))
    assert review.columns == (Column("epoch", 1), Column("epoch", 2))
    grid = review.grid(review.columns)
    assert [r.text for r in grid.rows] == ["photo of female skin, me1anoma on upper extremity, at age 60"]
    assert [c.state for c in grid.rows[0].cells] == ["ok", "ok"]
    assert any("/example/ds" in n for n in review.notes)
    written = write_run_review(review, tmp_path / "out", columns=review.columns)
    assert len(written.curves) == 2


def test_a_sample_of_a_prompt_no_longer_in_the_file_gets_its_own_row(run):
    stray = write_sample(run, sample_name(epoch=1, index=5, ts="20261126010500", seed=1005), colour(1, 5))
    review = review_run(run)
    grid = review.grid(review.columns)
    assert [r.text for r in grid.rows][-1] == "prompt 5 (not in sample_prompts.txt)"
    assert grid.rows[-1].cells[0].sample.path == stray and len(grid.rows) == 3
