"""The config group that is not a folder of files: ``teacher``, registered in Hydra's ConfigStore here.

``teacher=<name>`` is ``configs/model/<name>.yaml`` as a frozen model: without LoRA and without gradient
checkpointing (a teacher is never trained), and a random-init model (``model=tiny``) drawn with ``seed + 1``,
so ``model=tiny teacher=tiny`` are two different networks. One entry per model file, so the group needs
no files of its own and cannot miss a model; teachers that are not models (``configs/teacher/served.yaml``,
a server) have files there. Every entry point (``train.py``, ``evaluate.py``, ``generate.py``) calls
:func:`register_config_groups` before Hydra composes its config; so do the tests that compose configs.

Several teachers: ``teacher=[a,b]``. Hydra merges the options of a list into one node, so each option also
places its node under ``teachers.<name>`` (a defaults entry of the hidden ``teacher_member`` group):
``teachers`` holds every selected teacher by name, and :func:`teacher_nodes` reads it.

    python train.py method=kd_fkl model=tiny teacher=tiny
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from prefdistill.utils.run import config_dir


def teacher_node(model_file: Path):
    """The ``teacher`` group's entry for one ``configs/model/*.yaml``: that model, frozen (see above)."""
    node = OmegaConf.load(model_file)
    node.lora = None
    node.gradient_checkpointing = False
    if node.get("random_init") is not None:
        node.seed = int(node.get("seed") or 0) + 1
    return node


def register_config_groups() -> None:
    """Store the ``teacher`` group (one entry per ``configs/model/<name>.yaml``) in Hydra's ConfigStore, and
    the hidden ``teacher_member`` group that lists each selected teacher under ``teachers.<name>``."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for path in sorted((Path(config_dir()) / "model").glob("*.yaml")):
        node = teacher_node(path)
        store.store(group="teacher_member", name=path.stem, node=node, provider="prefdistill")
        member = {f"/teacher_member@_global_.teachers.{path.stem}": path.stem}
        listed = OmegaConf.merge({"defaults": ["_self_", member]}, node)
        store.store(group="teacher", name=path.stem, node=listed, provider="prefdistill")
    for path in sorted((Path(config_dir()) / "teacher").glob("*.yaml")):  # own files: they list themselves
        node = OmegaConf.load(path)
        node.pop("defaults", None)
        store.store(group="teacher_member", name=path.stem, node=node, provider="prefdistill")


def _task_overrides() -> list[str]:
    """The command line's overrides of the running Hydra app (empty outside one)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:
        return []


def teacher_nodes(cfg):
    """The ``teacher`` node, or the nodes of several teachers (``teacher=[a,b]``) in order.

    With several, ``cfg.teacher`` is Hydra's merge of them and means nothing: a setting written there on the
    command line (``teacher.dtype=...``) would be lost, so it is an error naming ``teachers.<name>.<key>``.
    """
    members = cfg.get("teachers") or {}
    if len(members) <= 1:
        lost = [o for o in _task_overrides() if o.lstrip("+~").startswith("teachers.")]
        if lost:
            raise ValueError(f"one teacher: {lost} would have no effect; set its keys as teacher.<key>")
        return cfg.get("teacher") or None
    lost = [o for o in _task_overrides() if o.lstrip("+~").startswith("teacher.")]
    if lost:
        raise ValueError(
            f"several teachers ({', '.join(members)}): {lost} would apply to none of them; set each teacher's keys "
            "as teachers.<name>.<key>"
        )
    return list(members.values())
