"""The config group that is not a folder of files: ``teacher``, registered in Hydra's ConfigStore here.

``teacher=<name>`` is ``configs/model/<name>.yaml`` as a frozen model: without LoRA and without gradient
checkpointing (a teacher is never trained), and a random-init model (``model=tiny``) drawn with ``seed + 1``,
so ``model=tiny teacher=tiny`` are two different networks. One entry per model file, so the group needs
no files of its own and cannot miss a model. Every entry point (``train.py``, ``evaluate.py``,
``generate.py``) calls :func:`register_config_groups` before Hydra composes its config; so do the tests
that compose configs.

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
    """Store the ``teacher`` group (one entry per ``configs/model/<name>.yaml``) in Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for path in sorted((Path(config_dir()) / "model").glob("*.yaml")):
        store.store(group="teacher", name=path.stem, node=teacher_node(path), provider="prefdistill")
