"""The library names settings; each command shows the ones it maps as the flags its user typed."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from orchestrator.cli.flags import settings_as_flags
from orchestrator.common.errors import MedsynthError
from orchestrator.train.job import parse_gpu_ids


def _failing(message: str, **flags: str) -> click.Command:
    @click.command()
    @settings_as_flags(**flags)
    def command() -> None:
        """Fails with `message`."""
        raise MedsynthError(message)
    return command


def test_a_mapped_setting_reads_as_its_flag_and_longer_names_paths_and_quotes_are_left_alone():
    command = _failing("num_processes 2 needs as many GPUs; offline: runs/offline/x missing (no_offline, "
                       "--offline, 'offline')", num_processes="--gpus", offline="--offline")
    result = CliRunner().invoke(command, [])
    assert result.exit_code == 1
    assert result.output == ("error: --gpus 2 needs as many GPUs; --offline: runs/offline/x missing "
                             "(no_offline, --offline, 'offline')\n")


def test_the_decorated_callback_keeps_its_help():
    assert _failing("x", n="--n").help == "Fails with `message`."


@pytest.mark.parametrize("text, message", [("0,x", "gpu_ids '0,x': expected comma-separated"),
                                           ("1,1", "gpu_ids '1,1': indices must be distinct")])
def test_gpu_ids_are_named_as_a_setting_by_the_library(text, message):
    with pytest.raises(MedsynthError, match=message):
        parse_gpu_ids(text)
    assert parse_gpu_ids("2,0") == (2, 0) and parse_gpu_ids(None) == ()


def test_train_shows_the_settings_as_its_flags(tmp_path, monkeypatch):
    from orchestrator.cli.train import train

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(train, ["--dry-run", "--gpu-ids", "0,1", "--num-processes", "3"])
    assert result.exit_code == 1 and result.output == "error: --num-processes 3 but 2 --gpu-ids\n"
    result = CliRunner().invoke(train, ["--dry-run", "--gpu-ids", "0,0"])
    assert result.exit_code == 1 and result.output == "error: --gpu-ids '0,0': indices must be distinct and >= 0\n"
