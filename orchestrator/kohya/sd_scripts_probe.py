"""Run sd-scripts' own readers on rendered files; executed as a script in a child process by selfcheck.py.

It imports sd-scripts (torch, diffusers, ...), so it never runs inside medsynth's process and imports nothing
from medsynth. Input on stdin (JSON): {"sd_scripts": dir, "cases": [{"train", "dataset", "prompts"}]} (paths or
null). Output: one line "MEDSYNTH_PROBE <json>" on stdout: per case {"ok": true, "args", "datasets", "prompts"}
or {"ok": false, "stage", "error"}. Mirrors sdxl_train_network.py's startup up to the dataset blueprint, then
builds the datasets when every image_dir exists (sd-scripts' own empty-dataset and caching checks), builds
the optimizer and lr scheduler for one dummy parameter (where the scheduler/warmup combinations abort), and for
a network module other than sd-scripts' own LoRA builds the network on a stand-in U-Net with network_args
passed as a launch passes them.
"""

import copy
import dataclasses
import json
import os
import sys

MARKER = "MEDSYNTH_PROBE "


def jsonable(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return repr(value)


def typed(namespace):
    return {k: {"value": jsonable(v), "type": type(v).__name__} for k, v in sorted(vars(namespace).items())}


def check_dataset_group(args, blueprint, config_util, sdxl_train_network):
    """Build the datasets (image sizes and captions are read; nothing is cached) and run the checks
    train_network.train() and SdxlNetworkTrainer.assert_extra_args() abort on."""
    train_group, val_group = config_util.generate_dataset_group_by_blueprint(blueprint.dataset_group)
    if len(train_group) == 0:  # train_network.py:575-579 logs this and exits 0
        raise RuntimeError("No data found: the datasets hold no images (sd-scripts would exit 0 without training)")
    if args.cache_latents:  # train_network.py:581-589
        assert train_group.is_latent_cacheable(), "when caching latents, either color_aug or random_crop cannot be used"
    sdxl_train_network.SdxlNetworkTrainer().assert_extra_args(args, train_group, val_group)
    return {"batches": len(train_group), "images": [d.num_train_images for d in train_group.datasets],
            "validation_images": [d.num_train_images for d in val_group.datasets] if val_group else [],
            "validation_batches": len(val_group) if val_group else 0,
            "reg_images": [d.num_reg_images for d in train_group.datasets]}


def stand_in_unet(torch):
    """A 3x3 conv in a ResnetBlock2D and linear layers in a Transformer2DModel: network modules choose the layers
    they adapt by these class names (LyCORIS's LoCon adapts the conv, LoRA-LierLa only the linear layers)."""
    class ResnetBlock2D(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(16, 16, 3, padding=1)

    class Transformer2DModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.to_q = torch.nn.Linear(16, 16)

    unet = torch.nn.Module()
    unet.resnets, unet.attentions = ResnetBlock2D(), Transformer2DModel()
    return unet


def build_network(args, torch):
    """train_network.py:664-688: network_args split at the first '=', dropout defaulted, create_network called."""
    import importlib

    net_kwargs = {}
    for net_arg in args.network_args or []:
        key, value = net_arg.split("=", 1)
        net_kwargs[key] = value
    if "dropout" not in net_kwargs:
        net_kwargs["dropout"] = args.network_dropout
    network = importlib.import_module(args.network_module).create_network(
        1.0, args.network_dim, args.network_alpha, None, [], stand_in_unet(torch),
        neuron_dropout=args.network_dropout, **net_kwargs)
    return {m.lora_name: {"class": type(m).__name__, "dim": getattr(m, "lora_dim", None),
                          "scale": float(getattr(m, "scale", "nan"))}
            for m in network.unet_loras}


def run_case(case, modules):
    sdxl_train_network, sdxl_train_util, train_util, config_util, torch = modules
    result = {"ok": True}
    stage = "argparse"
    try:
        argv = []
        if case.get("train"):
            argv += ["--config_file", case["train"]]
        if case.get("dataset"):
            argv += ["--dataset_config", case["dataset"]]
        # read_config_from_file re-parses sys.argv (the command line wins over the file), as in a real launch
        sys.argv = ["sdxl_train_network.py", *argv]
        parser = sdxl_train_network.setup_parser()
        args = parser.parse_args(argv)
        stage = "read_config_from_file"
        train_util.verify_command_line_training_args(args)
        args = train_util.read_config_from_file(args, parser)
        stage = "verify_training_args"
        train_util.verify_training_args(args)
        train_util.prepare_dataset_args(args, True)
        sdxl_train_util.verify_sdxl_training_args(args)
        result["args"] = typed(args)
        if args.dataset_config:
            stage = "dataset_config"
            user_config = config_util.load_user_config(args.dataset_config)
            sanitizer = config_util.ConfigSanitizer(True, True, args.masked_loss, True)
            blueprint = config_util.BlueprintGenerator(sanitizer).generate(user_config, args)
            result["datasets"] = [
                {"params": jsonable(dataclasses.asdict(d.params)),
                 "subsets": [jsonable(dataclasses.asdict(s.params)) for s in d.subsets]}
                for d in blueprint.dataset_group.datasets
            ]
            if all(os.path.isdir(s.params.image_dir) for d in blueprint.dataset_group.datasets for s in d.subsets):
                stage = "dataset_group"
                result["dataset_group"] = check_dataset_group(args, blueprint, config_util, sdxl_train_network)
        if case.get("train"):
            stage = "optimizer_and_scheduler"
            probe_args = copy.deepcopy(args)
            params = [torch.nn.Parameter(torch.zeros(1))]
            _, _, optimizer = train_util.get_optimizer(probe_args, params)
            train_util.get_scheduler_fix(probe_args, optimizer, 1)
            if args.network_module != "networks.lora":
                stage = "network"
                result["network"] = build_network(args, torch)
        if case.get("prompts"):
            stage = "sample_prompts"
            result["prompts"] = jsonable(train_util.load_prompts(case["prompts"]))
    except BaseException as e:  # noqa: BLE001 - sd-scripts also exits via SystemExit and asserts
        return {"ok": False, "stage": stage, "error": f"{type(e).__name__}: {e}"}
    return result


def main():
    request = json.load(sys.stdin)
    root = os.path.abspath(request["sd_scripts"])
    sys.path.insert(0, root)
    os.chdir(root)
    import torch
    import sdxl_train_network
    from library import config_util, sdxl_train_util, train_util

    modules = (sdxl_train_network, sdxl_train_util, train_util, config_util, torch)
    results = [run_case(case, modules) for case in request["cases"]]
    sys.stdout.write("\n" + MARKER + json.dumps(results) + "\n")


if __name__ == "__main__":
    main()
