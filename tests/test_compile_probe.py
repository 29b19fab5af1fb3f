"""bench/compile_probe.py: argument checks, the shape plan of the recompile probes, MFU arithmetic and graph-break
reporting. No SDXL is built here (that is the bench run itself)."""

from __future__ import annotations

import sys
from traceback import FrameSummary

import pytest

from script_loader import load_script

probe = load_script("bench/compile_probe.py")


def test_dynamic_list_keeps_order_and_drops_repeats():
    assert probe.parse_args(["--dynamic", "true, false,true"]).dynamic == ["true", "false"]


@pytest.mark.parametrize("value", ["maybe", "", "false,sometimes"])
def test_unknown_dynamic_value_is_rejected(value, capsys):
    with pytest.raises(SystemExit):
        probe.parse_args(["--dynamic", value])
    assert "false, true, auto" in capsys.readouterr().err


def test_side_off_the_bucket_grid_is_rejected(capsys):
    with pytest.raises(SystemExit):
        probe.parse_args(["--height", "1000"])
    assert "--height 1000: must be a multiple of 64" in capsys.readouterr().err


def test_side_too_small_for_a_second_bucket_is_rejected(capsys):
    with pytest.raises(SystemExit):
        probe.parse_args(["--width", "64"])
    assert "must be >= 128" in capsys.readouterr().err


def test_zero_batch_is_rejected(capsys):
    with pytest.raises(SystemExit):
        probe.parse_args(["--batch", "0"])
    assert "must be >= 1" in capsys.readouterr().err


def test_plan_probes_neighbour_bucket_short_batch_sampling_then_base():
    base, probes = probe.shape_plan(12, 1024, 1024)
    assert base == probe.Shape("base", 12, 1024, 1024)
    assert [(s.name, s.batch, s.height, s.width, s.train) for s in probes] == [
        ("second_bucket", 12, 1088, 960, True), ("short_batch", 11, 1024, 1024, True),
        ("sample", 2, 1024, 1024, False), ("base_again", 12, 1024, 1024, True)]


def test_plan_at_batch_one_has_no_short_batch():
    _, probes = probe.shape_plan(1, 256, 320)
    assert "short_batch" not in [s.name for s in probes]
    assert probes[0].height == 320 and probes[0].width == 256


def test_mfu_is_achieved_over_peak():
    # 12 images x 16.25 TFLOP in 1 s on a 989 TFLOP/s card
    assert probe.mfu(12 * 16.25e12, 1.0, 989.0) == pytest.approx(0.19717, abs=1e-5)
    assert probe.mfu(1e12, 2.0, 1.0) == pytest.approx(0.5)


def test_break_location_prefers_innermost_sd_scripts_frame(tmp_path):
    root = tmp_path / "sd-scripts"
    stack = [FrameSummary(str(root / "train_network.py"), 10, "train"),
             FrameSummary(str(root / "library" / "sdxl_original_unet.py"), 348, "forward"),
             FrameSummary("/usr/lib/python3/site-packages/torch/utils/checkpoint.py", 500, "checkpoint")]
    assert probe.break_location(stack, root) == "library/sdxl_original_unet.py:348"


def test_break_location_outside_sd_scripts_names_innermost_frame(tmp_path):
    stack = [FrameSummary("/x/a.py", 1, "f"), FrameSummary("/x/b.py", 7, "g")]
    assert probe.break_location(stack, tmp_path) == "/x/b.py:7"
    assert probe.break_location([], tmp_path) == "?"


def test_breaks_are_counted_per_reason_and_place_most_frequent_first():
    summary = probe.summarise_breaks([("a", "x.py:1"), ("b", "y.py:2"), ("b", "y.py:2"), ("a", "x.py:9")])
    assert summary[0] == {"reason": "b", "where": "y.py:2", "count": 2}
    assert sorted((s["reason"], s["where"], s["count"]) for s in summary[1:]) == [("a", "x.py:1", 1),
                                                                                 ("a", "x.py:9", 1)]


def test_break_location_reads_a_real_dynamo_break(tmp_path):
    torch = pytest.importorskip("torch", reason="torch not installed")
    root = tmp_path / "fake_sd_scripts"
    root.mkdir()
    (root / "breaker.py").write_text("import torch\n\n\ndef f(x):\n    y = x + 1\n    print('graph break')\n"
                                     "    return y * 2\n")
    sys.path.insert(0, str(root))
    try:
        import breaker
        torch._dynamo.reset()
        out = torch._dynamo.explain(breaker.f)(torch.ones(2))
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("breaker", None)
    assert out.graph_break_count == 1
    assert probe.break_location(out.break_reasons[0].user_stack, root) == "breaker.py:6"
