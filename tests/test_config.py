"""Presets, the project file's [train] table and --set, merged into one typed TrainConfig."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from orchestrator.train.config import AUTO, TrainConfig, parse_set
from orchestrator.train.schedule import schedule
from orchestrator.train.settings import BatchTier, choose_batch, load_preset, load_settings, preset_names, resolve_batch
from orchestrator.common.errors import MedsynthError


def settings(tmp_path: Path, *sets: str, preset: str | None = None, train: dict | None = None):
    project = tmp_path / "medsynth.toml"
    tables = {"train": train or {}, "dataset": {}}
    return load_settings(preset_name=preset, project=project if train is not None else None,
                         project_tables=tables if train is not None else None, sets=sets, cwd=tmp_path)


def test_all_presets_load_and_render_keys_that_exist():
    assert {"default", "seed-blog", "low-vram"} <= set(preset_names())
    for name in preset_names():
        preset = load_preset(name)
        assert preset.description
        TrainConfig(**preset.values)  # every preset key is a TrainConfig field of the right type


def test_seed_blog_preset_has_the_seed_settings(tmp_path):
    cfg = settings(tmp_path, preset="seed-blog").config
    assert cfg.learning_rate == 4e-7 and cfg.max_train_epochs == 50
    assert cfg.save_every_n_epochs == 2 and cfg.sample_every_n_epochs == 2
    assert cfg.mixed_precision == "fp16" and cfg.gradient_checkpointing and cfg.no_half_vae
    assert cfg.optimizer_type == "AdamW8bit" and cfg.cache_text_encoder_outputs and cfg.network_train_unet_only
    assert cfg.train_batch_size == 1 and cfg.lr_warmup_steps == 100 and cfg.lr_scaling == "none"


def test_defaults_follow_the_seed():
    cfg = TrainConfig()
    assert (cfg.network_module, cfg.network_dim, cfg.network_alpha) == ("networks.lora", 128, 128.0)
    assert cfg.optimizer_type == "AdamW8bit" and cfg.lr_scheduler == "constant_with_warmup"
    assert cfg.sample_sampler == "euler_a" and cfg.sample_steps == 28 and 7.5 <= cfg.sample_cfg_scale <= 9
    assert (cfg.sample_width, cfg.sample_height) == (1024, 1024) and cfg.negative_prompt
    assert cfg.save_model_as == "safetensors" and cfg.save_every_n_epochs == 1


def test_default_preset_picks_batch_automatically_and_caches(tmp_path):
    s = settings(tmp_path)
    assert s.preset.name == "default" and s.config.train_batch_size == AUTO
    assert s.config.cache_latents and s.config.cache_text_encoder_outputs and s.config.network_train_unet_only
    assert s.config.mixed_precision == "bf16" and s.config.sdpa


def test_unknown_preset_suggests_a_name(tmp_path):
    with pytest.raises(MedsynthError, match="did you mean 'seed-blog'"):
        settings(tmp_path, preset="seed-blg")


@pytest.mark.parametrize("item, key, value", [
    ("network_dim=64", "network_dim", 64),
    ("learning_rate=1e-4", "learning_rate", 1e-4),
    ("network_alpha=16", "network_alpha", 16.0),
    ("gradient_checkpointing=true", "gradient_checkpointing", True),
    ("optimizer_type=AdamW", "optimizer_type", "AdamW"),
    ('optimizer_type="Lion"', "optimizer_type", "Lion"),
    ('optimizer_args=["weight_decay=0.01", "eps=1e-8"]', "optimizer_args", ("weight_decay=0.01", "eps=1e-8")),
    ("train_batch_size=3", "train_batch_size", 3),
    ("train_batch_size=auto", "train_batch_size", "auto"),
])
def test_set_values_are_read_as_toml_and_typed(item, key, value):
    layer = parse_set([item], base=Path("/base"))
    assert layer.values[key] == value and type(layer.values[key]) is type(value)


def test_set_relative_path_resolves_against_the_working_directory(tmp_path):
    layer = parse_set(["tokenizer_cache_dir=tok"], base=tmp_path)
    assert layer.values["tokenizer_cache_dir"] == tmp_path / "tok"


def test_set_empty_value_unsets_an_optional_key():
    assert parse_set(["vae="], base=Path("/")).values["vae"] is None


@pytest.mark.parametrize("item, message", [
    ("network_dim=1.5", "must be an integer"),
    ("network_dim=true", "must be an integer"),
    ("learning_rate=fast", "must be a number"),
    ("sdpa=1", "must be true or false"),
    ("train_batch_size=0", "positive integer"),
    ("network_dim", "expected key=value"),
    ('optimizer_args=["a", 1]', "list of strings|cannot read"),
])
def test_set_wrong_types_are_refused(item, message):
    with pytest.raises(MedsynthError, match=message):
        parse_set([item], base=Path("/"))


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_seed_outside_numpys_range_is_refused(tmp_path, seed):
    # sd-scripts passes it to accelerate's set_seed -> numpy.random.seed, which raises outside 0 .. 2**32 - 1
    with pytest.raises(MedsynthError, match="'seed' must be between 0 and"):
        settings(tmp_path, f"seed={seed}")


def test_unknown_key_suggests_the_closest(tmp_path):
    with pytest.raises(MedsynthError, match="unknown train setting 'network_dimm'; did you mean 'network_dim'"):
        settings(tmp_path, "network_dimm=64")


def test_unknown_key_in_project_file_names_the_file(tmp_path):
    with pytest.raises(MedsynthError, match=r"medsynth.toml \[train\]: unknown train setting 'learning_rat'"):
        settings(tmp_path, train={"learning_rat": 1e-4})


def test_kohya_pass_through_options_are_kept(tmp_path):
    cfg = settings(tmp_path, "kohya.noise_offset=0.05", train={"kohya": {"min_snr_gamma": 5.0}}).config
    assert dict(cfg.kohya) == {"noise_offset": 0.05, "min_snr_gamma": 5.0}


def test_kohya_pass_through_of_a_medsynth_key_is_refused(tmp_path):
    with pytest.raises(MedsynthError, match="set 'network_dim' instead"):
        settings(tmp_path, "kohya.network_dim=8")


@pytest.mark.parametrize("given, hint", [
    ("kohya.train_script=sdxl_train.py", ""),  # nothing close: no hint at all (not 'random_crop')
    ("kohya.noise_ofset=0.1", "; did you mean 'kohya.noise_offset'?"),
    ("kohya.learning_rte=1e-4", "; did you mean the medsynth setting 'learning_rate'?"),
    ("kohya.batch_size=2", "; it is a dataset.toml key (the training option is 'train_batch_size')"),
])
def test_kohya_pass_through_of_no_sd_scripts_option_is_refused_where_it_is_given(tmp_path, given, hint):
    key = given.split("=")[0]
    with pytest.raises(MedsynthError) as caught:
        settings(tmp_path, given)
    assert str(caught.value) == f"--set: '{key}' is not an option of sd-scripts' sdxl_train_network.py{hint}"
    with pytest.raises(MedsynthError, match=r"medsynth.toml \[train\]: 'kohya\."):
        settings(tmp_path, train={"kohya": {key.removeprefix("kohya."): 1}})


def test_did_you_mean_names_only_reasonably_close_names():
    from orchestrator.common.suggest import did_you_mean

    assert did_you_mean("train_script", ["random_crop", "train_batch_size"]) == ""
    assert did_you_mean("max_epochs", ["max_train_epochs", "initial_epoch"]) == "; did you mean 'max_train_epochs'?"
    assert did_you_mean("gird", ["grid"]) == "; did you mean 'grid'?"


def test_layers_apply_preset_then_project_file_then_set(tmp_path):
    s = settings(tmp_path, "max_train_epochs=3", preset="seed-blog",
                 train={"max_train_epochs": 7, "network_dim": 32})
    assert s.config.max_train_epochs == 3          # --set beats the file
    assert s.config.network_dim == 32              # the file beats the field default
    assert s.config.learning_rate == 4e-7          # the preset stays where nobody overrides
    assert {"max_train_epochs", "network_dim"} <= s.user_keys


def test_project_file_chooses_the_preset_and_the_dataset(tmp_path):
    project = tmp_path / "medsynth.toml"
    s = load_settings(project=project, project_tables={"train": {"preset": "low-vram"}, "dataset": {"out": "ds"}},
                      cwd=Path("/elsewhere"))
    assert s.preset.name == "low-vram" and s.config.dataset == tmp_path / "ds"


TIERS = (BatchTier(100, 8, False), BatchTier(46, 4, False), BatchTier(20, 1, False), BatchTier(0, 1, True))


@pytest.mark.parametrize("gib, batch, ckpt", [(139.8, 8, False), (79.1, 4, False), (23.6, 1, False),
                                             (15.0, 1, True)])
def test_batch_tier_follows_gpu_memory(gib, batch, ckpt):
    tier, seen = choose_batch(TIERS, gib)
    assert seen and (tier.train_batch_size, tier.gradient_checkpointing) == (batch, ckpt)
    assert gib >= tier.min_gpu_gib


def test_no_gpu_uses_the_smallest_tier():
    tier, seen = choose_batch(TIERS, None)
    assert not seen and tier == min(TIERS, key=lambda t: t.min_gpu_gib)


def test_auto_batch_resolves_from_gpu_memory_and_explains(tmp_path):
    s = settings(tmp_path)
    cfg, choice = resolve_batch(s.config, s.preset, set(s.user_keys), 139.8, "NVIDIA H200")
    top = max(s.preset.batch_tiers, key=lambda t: t.min_gpu_gib)
    assert cfg.train_batch_size == top.train_batch_size == choice.train_batch_size
    assert choice.how == "tier" and "H200" in choice.explanation


def test_auto_batch_without_gpu_says_so(tmp_path):
    s = settings(tmp_path)
    cfg, choice = resolve_batch(s.config, s.preset, set(s.user_keys), None)
    assert choice.how == "no-gpu" and "no GPU visible: would use" in choice.explanation
    assert isinstance(cfg.train_batch_size, int)


@pytest.mark.parametrize("where", ["set", "project"])
def test_auto_batch_with_a_preset_without_tiers_is_a_clear_error(tmp_path, where):
    # seed-blog has no [[batch_tiers]]: "auto" has nothing to choose from
    with pytest.raises(MedsynthError, match="seed-blog.*batch_tiers"):
        if where == "set":
            settings(tmp_path, "train_batch_size=auto", preset="seed-blog")
        else:
            settings(tmp_path, preset="seed-blog", train={"train_batch_size": "auto"})


def test_set_batch_size_overrides_auto(tmp_path):
    s = settings(tmp_path, "train_batch_size=2")
    cfg, choice = resolve_batch(s.config, s.preset, set(s.user_keys), 139.8)
    assert cfg.train_batch_size == 2 and choice.how == "set"


def test_explicit_gradient_checkpointing_beats_the_tier(tmp_path):
    s = settings(tmp_path, "gradient_checkpointing=true")
    cfg, _ = resolve_batch(s.config, s.preset, set(s.user_keys), 139.8)
    assert cfg.gradient_checkpointing is True


def write_preset(tmp_path: Path, tier_lines: str) -> Path:
    (tmp_path / "tiered.toml").write_text(
        'description = "t"\n[train]\ntrain_batch_size = "auto"\n'
        f'[[batch_tiers]]\nmin_gpu_gib = 40\ntrain_batch_size = 8\ngradient_checkpointing = false\n{tier_lines}\n'
        '[[batch_tiers]]\nmin_gpu_gib = 0\ntrain_batch_size = 1\ngradient_checkpointing = true\n')
    return tmp_path


def test_a_tier_carries_train_settings_that_apply_with_it(tmp_path):
    preset = load_preset("tiered", write_preset(tmp_path, 'optimizer_type = "AdamW"\nkohya.highvram = true'))
    cfg, choice = resolve_batch(TrainConfig(train_batch_size=AUTO), preset, set(), 80.0, "A100")
    assert (cfg.train_batch_size, cfg.optimizer_type, cfg.kohya) == (8, "AdamW", {"highvram": True})
    assert "optimizer_type AdamW, kohya.highvram true" in choice.explanation
    small, _ = resolve_batch(TrainConfig(train_batch_size=AUTO), preset, set(), 16.0, "T4")
    assert (small.train_batch_size, small.optimizer_type, small.kohya) == (1, "AdamW8bit", {})


def test_a_users_setting_beats_the_tiers(tmp_path):
    preset = load_preset("tiered", write_preset(
        tmp_path, 'optimizer_type = "AdamW"\noptimizer_args = ["fused=True"]\nvae_batch_size = 8'))
    cfg, choice = resolve_batch(TrainConfig(train_batch_size=AUTO, optimizer_type="Lion"), preset,
                                {"optimizer_type"}, 80.0)
    assert (cfg.optimizer_type, cfg.optimizer_args, cfg.vae_batch_size) == ("Lion", (), 8)
    assert "optimizer" not in choice.explanation and "vae_batch_size 8" in choice.explanation


@pytest.mark.parametrize("line, message", [
    ("optimizer_typ = \"AdamW\"", r"tiered.toml \[\[batch_tiers\]\] min_gpu_gib = 40: unknown train setting "
                                   r"'optimizer_typ'.*did you mean 'optimizer_type'"),
    ("kohya.optimizer_type = \"AdamW\"", r"min_gpu_gib = 40: 'kohya.optimizer_type' is a medsynth setting"),
    ("vae_batch_size = \"8\"", r"min_gpu_gib = 40: 'vae_batch_size' must be an integer"),
])
def test_a_bad_tier_setting_names_the_preset_and_the_tier(tmp_path, line, message):
    with pytest.raises(MedsynthError, match=message):
        load_preset("tiered", write_preset(tmp_path, line))


def test_a_tier_setting_that_breaks_a_rule_is_refused_when_chosen(tmp_path):
    preset = load_preset("tiered", write_preset(tmp_path, 'dynamo_mode = "max-autotune"'))
    with pytest.raises(MedsynthError, match="dynamo_mode.*torch_compile = true"):
        resolve_batch(TrainConfig(train_batch_size=AUTO), preset, set(), 80.0)


def test_schedule_arithmetic():
    cfg = TrainConfig(train_batch_size=4, max_train_epochs=5, lr_warmup_images=100, learning_rate=2e-5,
                      lr_scaling="sqrt", reference_batch_size=1)
    s = schedule(cfg, subsets=[(21, 3, False)], num_processes=2)
    assert s.steps_per_epoch == math.ceil(21 * 3 / (4 * 2))
    assert s.total_steps == s.steps_per_epoch * 5
    # scheduler steps: sd-scripts steps the scheduler once per process per optimizer step
    assert s.warmup_steps == math.ceil(100 / 4) and isinstance(s.warmup_steps, int)
    assert s.learning_rate == pytest.approx(2e-5 * math.sqrt(8))


def test_linear_and_no_scaling():
    base = dict(train_batch_size=8, learning_rate=1e-5, reference_batch_size=2)
    assert schedule(TrainConfig(lr_scaling="linear", **base), subsets=[(8, 1, False)]).learning_rate == pytest.approx(4e-5)
    assert schedule(TrainConfig(lr_scaling="none", **base), subsets=[(8, 1, False)]).learning_rate == 1e-5


def test_explicit_warmup_steps_win_and_constant_scheduler_has_none():
    assert schedule(TrainConfig(lr_warmup_steps=7), subsets=[(10, 1, False)]).warmup_steps == 7
    assert schedule(TrainConfig(lr_scheduler="constant"), subsets=[(10, 1, False)]).warmup_steps == 0


def test_bad_lr_scaling_is_refused(tmp_path):
    with pytest.raises(MedsynthError, match="lr_scaling"):
        settings(tmp_path, "lr_scaling=cubic")


def test_relative_model_path_in_the_project_file_is_relative_to_the_file(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "sdxl.safetensors").write_bytes(b"x")
    s = settings(tmp_path, train={"pretrained_model_name_or_path": "models/sdxl.safetensors"})
    assert s.config.pretrained_model_name_or_path == str(tmp_path / "models" / "sdxl.safetensors")


def test_hub_id_stays_a_hub_id(tmp_path):
    s = settings(tmp_path, "pretrained_model_name_or_path=stabilityai/stable-diffusion-xl-base-1.0")
    assert s.config.pretrained_model_name_or_path == "stabilityai/stable-diffusion-xl-base-1.0"


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden"])
def test_output_name_cannot_leave_the_run_folder(tmp_path, name):
    with pytest.raises(MedsynthError, match="output_name"):
        settings(tmp_path, f"output_name={json.dumps(name)}")


@pytest.mark.parametrize("item", ["dynamo_mode=max-autotune", "dynamo_dynamic=true", "dynamo_backend=inductor"])
def test_compile_settings_without_torch_compile_are_refused(tmp_path, item):
    key = item.split("=")[0]
    with pytest.raises(MedsynthError, match=f"'{key}' takes effect only with torch_compile = true"):
        settings(tmp_path, item)


def test_unknown_dynamo_mode_suggests_the_closest(tmp_path):
    with pytest.raises(MedsynthError, match="dynamo_mode.*did you mean 'reduce-overhead'"):
        settings(tmp_path, "torch_compile=true", "dynamo_mode=reduce_overhead")


def test_compile_settings_with_torch_compile_are_kept(tmp_path):
    cfg = settings(tmp_path, "torch_compile=true", "dynamo_mode=max-autotune", "dynamo_dynamic=true").config
    assert (cfg.torch_compile, cfg.dynamo_mode, cfg.dynamo_dynamic) == (True, "max-autotune", True)


@pytest.mark.parametrize("key", ["save_last_n_epochs", "save_last_n_epochs_state"])
def test_keeping_zero_epochs_is_refused_because_sd_scripts_would_delete_each_new_file(tmp_path, key):
    with pytest.raises(MedsynthError, match=f"'{key}' must be >= 1"):
        settings(tmp_path, f"{key}=0")
    assert getattr(settings(tmp_path, f"{key}=1").config, key) == 1


def _template_attributes(name: str, variable: str) -> set[str]:
    """The attributes of `variable` that a template reads (`t.network_dim` -> network_dim), from Jinja's own parse."""
    import jinja2
    from jinja2 import nodes

    from orchestrator.common.paths import TEMPLATES_DIR

    tree = jinja2.Environment().parse((TEMPLATES_DIR / name).read_text(encoding="utf-8"))
    return {n.attr for n in tree.find_all(nodes.Getattr) if isinstance(n.node, nodes.Name) and n.node.name == variable}


def test_every_train_setting_is_rendered_by_a_template_or_declared_medsynths_own():
    from orchestrator.train.config import DATASET_TOML_FIELDS, FIELDS, MEDSYNTH_ONLY, SAMPLE_PROMPT_FIELDS

    in_train = _template_attributes("train.toml.j2", "t") & set(FIELDS)
    in_dataset = _template_attributes("dataset.toml.j2", "d")
    in_prompts = _template_attributes("sample_prompts.txt.j2", "s")
    homes = {name: [home for home, names in (("train.toml.j2", in_train), ("medsynth only", MEDSYNTH_ONLY),
                                             ("dataset.toml.j2", DATASET_TOML_FIELDS),
                                             ("sample_prompts.txt.j2", SAMPLE_PROMPT_FIELDS)) if name in names]
             for name in FIELDS}
    assert {name: found for name, found in homes.items() if len(found) != 1} == {}  # one home each, no orphan
    assert DATASET_TOML_FIELDS <= in_dataset                       # and the templates really read them
    assert set(SAMPLE_PROMPT_FIELDS.values()) <= in_prompts
