"""Every YAML under configs/ composes (recursively), and object nodes instantiate."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from train_helpers import CONFIGS, compose_train, method_loss

INCLUDED = ("local", "recipe")  # not selected on the command line: included by other files (or per machine)
GROUP_FILES = sorted(
    p for p in CONFIGS.rglob("*.yaml") if p.parent != CONFIGS and p.parent.name not in INCLUDED
)
PRIMARIES = ("train", "generate", "eval")  # configs/<name>.yaml: the Hydra apps


def _groups_of(primary: str) -> set[str]:
    groups = set()
    for entry in OmegaConf.load(CONFIGS / f"{primary}.yaml").get("defaults", []):
        if isinstance(entry, str) or entry is None:
            continue
        groups |= {key.split("@")[0].removeprefix("optional ").strip() for key in entry}
    return groups


@pytest.mark.parametrize("path", GROUP_FILES, ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_every_config_composes(path, tmp_path):
    group = path.parent.relative_to(CONFIGS).as_posix()
    top = "hydra" if group.startswith("hydra/") else group  # Hydra's own groups: hydra/launcher=slurm
    primary = next((p for p in PRIMARIES if top in _groups_of(p)), None)
    assert primary, f"{path}: group {group!r} is used by none of {PRIMARIES}"
    cfg = compose_train(tmp_path, [f"{group}={path.stem}"], config_name=primary)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


def _recipe_users(stem: str) -> list:
    """The group files that include recipe ``stem``, directly or through other recipes."""
    direct = [p for p in CONFIGS.rglob("*.yaml") if f"/recipe/{stem}@" in p.read_text() and p.stem != stem]
    return [user for p in direct for user in (_recipe_users(p.stem) if p.parent.name == "recipe" else [p])]


@pytest.mark.parametrize("path", sorted((CONFIGS / "recipe").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_recipe_is_included_and_composes(path, tmp_path):
    users = _recipe_users(path.stem)
    assert users, f"{path} is included by no config"
    for user in users:
        group = user.parent.relative_to(CONFIGS).as_posix()
        cfg = compose_train(tmp_path, [f"{group}={user.stem}", "teacher=tiny"])
        assert OmegaConf.to_container(cfg, resolve=True)[group]


def test_group_nodes_instantiate(tmp_path):
    cfg = compose_train(tmp_path, ["model=tiny", "logger=csv"])
    assert instantiate(cfg.model).name_or_path
    assert instantiate(cfg.method).name == "dpo"
    for node in cfg.callbacks.values():
        instantiate(node)
    for node in cfg.logger.values():
        instantiate(node)


def test_method_files_instantiate():
    from prefdistill.losses import Loss

    for path in sorted((CONFIGS / "method").glob("*.yaml")):
        assert isinstance(method_loss(path.stem), Loss), path


@pytest.mark.parametrize("group", ["model", "method", "data"])
def test_unknown_name_lists_what_exists(group, tmp_path):
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException) as err:
        compose_train(tmp_path, [f"{group}=no_such_thing"])
    known = sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))
    assert all(name in str(err.value) for name in known[:3]), str(err.value)


def test_unknown_key_is_rejected(tmp_path):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose_train(tmp_path, ["method.no_such_key=1"])


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml")))
def test_every_model_is_a_frozen_teacher(name, tmp_path):
    """``teacher=<name>`` exists for every model file: the same spec, no LoRA, no checkpointing."""
    cfg = compose_train(tmp_path, [f"model={name}", f"teacher={name}"])
    model, teacher = OmegaConf.to_container(cfg.model), OmegaConf.to_container(cfg.teacher)
    assert teacher["lora"] is None and teacher["gradient_checkpointing"] is False
    if model.get("random_init"):  # a random-init teacher is another draw than the same-named student
        assert teacher.pop("seed") == (model.pop("seed") or 0) + 1
    assert {k: v for k, v in teacher.items() if k not in ("lora", "gradient_checkpointing")} == {
        k: v for k, v in model.items() if k not in ("lora", "gradient_checkpointing")
    }
