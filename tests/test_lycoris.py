"""LyCORIS (network_module = "lycoris.kohya"): network_args checked against the installed lycoris-lora, whose
arguments are read from its own source; a one-line refusal when it is not installed."""

from __future__ import annotations

import importlib.util
import shutil
import sys

import pytest
from kohya_samples import edited, train

from orchestrator.common.errors import MedsynthError
from orchestrator.kohya import lycoris_args as lycoris
from orchestrator.kohya.validate import validate_train_config
from orchestrator.train.preflight import Probe, check_network

PACKAGE = lycoris.installed()
needs_lycoris = pytest.mark.skipif(PACKAGE is None, reason="lycoris-lora not installed: make setup-kohya")


def lycoris_train(args: list[str]) -> dict:
    return edited(edited(train(), "network.network_module", lycoris.MODULE), "network.network_args", args)


def message(args: list[str]) -> str | None:
    try:
        validate_train_config(lycoris_train(args), source="train.toml")
    except MedsynthError as exc:
        assert "\n" not in str(exc)
        return str(exc)
    return None


@needs_lycoris
@pytest.mark.parametrize("args", [
    [],
    ["algo=locon", "conv_dim=16", "conv_alpha=8"],
    ["algo=LoHa", "conv_dim=4", "dropout=0.1", "use_tucker=True"],  # create_network lower()s the algorithm
    ["algo=lokr", "factor=-1", "decompose_both=true", "full_matrix=false"],
    ["algo=diag-oft", "constraint=0.0001", "rescaled=true"],
    ["algo=ia3", "preset=ia3"],
    ["preset=attn-only"],
    ["preset=/presets/my-blocks.toml"],  # a preset file of the user's
])
def test_network_args_lycoris_reads_are_accepted(args):
    assert message(args) is None


@needs_lycoris
@pytest.mark.parametrize("args, fragment", [
    (["algo=locom"], "'locom' is not one of lora, locon"),
    (["algo=locom"], "did you mean 'locon'?"),
    (["conv_dims=8"], ("conv_dims is not an argument lycoris.kohya reads (it would ignore it); "
                       "did you mean 'conv_dim'?")),
    (["network_dims=8"], "; it reads algo, block_size"),
    (["conv_dim=8.5"], "must be an integer, got '8.5'"),
    (["conv_alpha=half"], "must be a number"),
    (["factor=8.0"], "must be an integer"),
    (["use_tucker=no"], "lycoris reads anything but 'false' as true"),
    (["decompose_both=false"], "which Python takes as true"),
    (["use_cp=true"], "use_cp is deprecated; use use_tucker"),
    (["preset=atten-only"], "did you mean 'attn-only'?"),
    (["conv_dim=8", "conv_alpha=4", "conv_dim=16"], "item 2 'conv_dim=16': conv_dim is given twice"),
])
def test_network_args_lycoris_would_ignore_or_misread_are_refused(args, fragment):
    text = message(args)
    assert text is not None and text.startswith("train.toml: [network] network_args: item ")
    assert fragment in text and f"(lycoris-lora {PACKAGE.version})" in text


def test_lycoris_network_without_the_package_is_refused_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "lycoris", None)  # what Python does for a module it must not import
    assert lycoris.installed() is None
    assert message(["algo=locon"]) == (
        "train.toml: [network] network_module: 'lycoris.kohya' needs the lycoris-lora package, "
        "which this Python cannot import: pip install 'medsynth[lycoris]' (or make setup-kohya)")


def test_network_args_of_sd_scripts_own_lora_are_not_checked_against_lycoris():
    cfg = edited(train(), "network.network_args", ["conv_dim=4", "conv_alpha=1"])
    validate_train_config(cfg, source="train.toml")
    assert cfg["network"]["network_module"] == "networks.lora"


@needs_lycoris
def test_accepted_arguments_follow_the_installed_source(tmp_path):
    """A key that a newer create_network reads is accepted without any change to medsynth."""
    folder = next(iter(importlib.util.find_spec("lycoris").submodule_search_locations))
    copy = shutil.copytree(folder, tmp_path / "lycoris", ignore=shutil.ignore_patterns("__pycache__"))
    source = (copy / "kohya.py").read_text(encoding="utf-8")
    marker = "    algo = (kwargs.get("
    assert marker in source
    (copy / "kohya.py").write_text(source.replace(marker, '    novel = int(kwargs.get("novel_rank", 2))\n' + marker, 1),
                                   encoding="utf-8")
    newer = lycoris.read_package(copy)
    assert newer.kinds["novel_rank"] == "int" and "novel_rank" not in PACKAGE.kinds
    assert newer.problem(["novel_rank=3"]) is None
    assert "must be an integer" in newer.problem(["novel_rank=x"])
    assert newer.algos == PACKAGE.algos and newer.presets == PACKAGE.presets


@needs_lycoris
def test_launch_refuses_a_training_interpreter_without_the_validated_lycoris():
    def probe(version: str | None) -> Probe:
        return Probe("/envs/train/bin/python", {"lycoris-lora": version}, (), True, True)

    check_network(lycoris.MODULE, probe(PACKAGE.version))
    check_network("networks.lora", probe(None))
    with pytest.raises(MedsynthError, match=r"/envs/train/bin/python cannot import lycoris; network_args were "
                                            rf"checked against lycoris-lora=={PACKAGE.version}"):
        check_network(lycoris.MODULE, probe(None))
    with pytest.raises(MedsynthError, match=r"has lycoris-lora 0\.0\.1"):
        check_network(lycoris.MODULE, probe("0.0.1"))
