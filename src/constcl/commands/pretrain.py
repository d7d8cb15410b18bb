"""``constcl pretrain [CONFIG.yaml] [section.key=value ...]``: ConST-CL pretraining.

Loads the config (a YAML file or a shipped preset, plus overrides) and calls
:func:`constcl.engine.pretrain.pretrain`. Works as is under
``torchrun --nproc_per_node=N -m constcl pretrain ...``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import yaml

from constcl.config import Config, ConfigError, load_config, to_dict
from constcl.engine.pretrain import pretrain
from constcl.errors import ConstclError, user_message

log = logging.getLogger("constcl.train")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", default=None,
                        help="YAML file or preset name (demo, k400_r3d50_200k); default: demo")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="overrides, e.g. train.steps=100 optim.base_lr=0.1")
    parser.add_argument("--list-config", action="store_true",
                        help="print every config key with its default and what it does, then exit")


def print_config_keys() -> None:
    from constcl.config import field_docs

    docs = field_docs()
    for section, values in to_dict(Config()).items():
        for key, value in values.items():
            name = f"{section}.{key}"
            print(f"{name}={value!r}")
            if name in docs:
                print(f"    {docs[name]}")


def resolve_config_path(name: str | None) -> Path:
    """A YAML path, or the name of a shipped preset (default: demo)."""
    from constcl.engine.presets import preset_path

    if name is None:
        return preset_path("demo")
    if Path(name).is_file() or name.endswith((".yaml", ".yml")):
        return Path(name)
    return preset_path(name)


def run(args: argparse.Namespace) -> int:
    if args.list_config:
        print_config_keys()
        return 0
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config:  # only overrides were given
        config, overrides = None, [config] + overrides
    try:
        path = resolve_config_path(config)
        cfg = load_config(path, overrides)
    except yaml.YAMLError as err:  # constcl.cli.main prints these as one line, exit code 2
        raise ConstclError(f"invalid config: {path} is not valid YAML: {user_message(err)}"
                           ) from err
    except (ConfigError, ValueError) as err:
        raise ConstclError(f"invalid config: {user_message(err)}") from err
    pretrain(cfg)
    return 0
