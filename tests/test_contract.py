"""The committed kohya contract: pinned commit, content, determinism, and its generator."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys

import pytest

from orchestrator.common.errors import MedsynthError
from orchestrator.kohya.contract import CONTRACT_FILE, load_contract
from orchestrator.kohya.images import TRAINING_IMAGE_SUFFIXES
from orchestrator.common.paths import REPO_ROOT, SD_SCRIPTS_COMMIT, SD_SCRIPTS_DIR

GENERATOR = REPO_ROOT / "tools" / "gen_kohya_contract.py"


def _generator_module():
    spec = importlib.util.spec_from_file_location("gen_kohya_contract", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_contract_is_for_the_pinned_commit():
    assert load_contract().commit == SD_SCRIPTS_COMMIT


def test_options_carry_argparse_types_choices_and_nargs():
    options = load_contract().options
    assert options["learning_rate"].type == "float"
    assert options["resolution"].type == "str"  # "W,H": sd-scripts splits it itself
    assert options["lr_warmup_steps"].type == "int_or_float"
    assert options["network_train_unet_only"].type == "bool"
    assert options["network_args"].nargs == "*"
    assert set(options["mixed_precision"].choices) == {"no", "fp16", "bf16"}
    assert options["max_train_steps"].default == 1600
    assert "cache_text_encoder_outputs" in options  # added by the SDXL trainer only


def test_options_shared_with_the_dataset_schema_carry_its_exact_type():
    options = load_contract().options
    assert options["validation_split"].sanitized_as == ("float",)
    assert options["train_batch_size"].sanitized_as == ("int",)
    assert options["resolution"].sanitized_as is None  # converted from "W,H" before the sanitizer sees it
    assert options["learning_rate"].sanitized_as is None


def test_dataset_schema_levels_and_exact_types():
    schema = load_contract().dataset
    assert schema.subset["image_dir"].required
    assert "image_dir" not in schema.general and "image_dir" not in schema.dataset
    assert set(schema.dataset["resolution"].types) == {"int", "pair[int]"}
    assert "resolution" not in schema.subset
    assert schema.general["validation_split"].types == ("float",)
    assert schema.subset["num_repeats"].types == ("int",)


def test_dispatch_names_lists():
    contract = load_contract()
    assert "AdamW8bit" in contract.optimizers
    assert {"constant", "constant_with_warmup", "cosine"} <= set(contract.schedulers)
    assert "reduce_lr_on_plateau" not in contract.schedulers  # a transformers name sd-scripts' dispatch crashes on
    assert contract.schedulers["cosine_with_min_lr"] == "lr_scheduler_min_lr_ratio"
    assert "euler_a" in contract.samplers and "dpm++_2m_karras" not in contract.samplers


def test_committed_file_is_in_canonical_form():
    text = CONTRACT_FILE.read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def test_unreadable_contract_is_a_medsynth_error(tmp_path):
    broken = tmp_path / "contract.json"
    broken.write_text('{"options": {}}')
    with pytest.raises(MedsynthError, match="regenerate it"):
        load_contract(broken)


def test_generator_takes_commit_flag_for_a_plain_folder(tmp_path):
    gen = _generator_module()
    assert gen.sd_scripts_commit(tmp_path, "0123abcd") == "0123abcd"
    with pytest.raises(SystemExit):
        gen.sd_scripts_commit(tmp_path, None)


def test_generator_reads_the_gitlink_and_refuses_a_conflicting_flag():
    if subprocess.run(["git", "-C", str(REPO_ROOT), "ls-tree", "HEAD", "vendor/sd-scripts"],
                      capture_output=True, text=True).stdout.split()[1:2] != ["commit"]:
        pytest.skip("no vendor/sd-scripts gitlink in HEAD (not a git checkout of medsynth)")
    gen = _generator_module()
    assert gen.sd_scripts_commit(SD_SCRIPTS_DIR, None) == SD_SCRIPTS_COMMIT
    with pytest.raises(SystemExit):
        gen.sd_scripts_commit(SD_SCRIPTS_DIR, "0" * 40)


@pytest.mark.kohya
def test_regenerating_at_the_pin_gives_the_committed_bytes(sd_scripts_dir, tmp_path):
    out = tmp_path / "contract.json"
    done = subprocess.run([sys.executable, str(GENERATOR), "--sd-scripts", str(sd_scripts_dir), "--out", str(out),
                           "--commit", SD_SCRIPTS_COMMIT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.read_bytes() == CONTRACT_FILE.read_bytes()


def test_the_training_image_suffixes_are_the_ones_sd_scripts_globs_for():
    source = SD_SCRIPTS_DIR / "library" / "train_util.py"
    if not source.is_file():
        pytest.skip("vendor/sd-scripts is empty: run 'git submodule update --init' (needs network)")
    tree = ast.parse(source.read_text(encoding="utf-8"))
    listed = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                  and [getattr(t, "id", None) for t in node.targets] == ["IMAGE_EXTENSIONS"])
    assert {s.lower() for s in listed} == set(TRAINING_IMAGE_SUFFIXES)
