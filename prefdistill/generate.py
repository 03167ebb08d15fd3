"""Sampling entry point (Hydra app): ``python generate.py [overrides]`` or ``pd-generate [overrides]``.

Recipe: model spec -> prompts of one data split -> sampling params -> resumable shards on disk
(``prefdistill.generation.shards``) -> ``summary.json`` in the run folder. ``main`` returns the number
of records written.

    python generate.py model=tiny split=train limit=32                # tiny model, 32 prompts
    python generate.py generation/sampling=greedy shard_size=16        # another sampling preset
    python generate.py generation=vllm generation.generator.tensor_parallel_size=2

Kill it and re-run the same command: finished shards are kept and only the missing ones run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from prefdistill.generation.shards import MANIFEST, PromptSource, generate_to_shards, read_shards
from prefdistill.utils.atomic import atomic_write_json, atomic_write_text
from prefdistill.utils.cache import hash_inputs
from prefdistill.utils.config_groups import register_config_groups
from prefdistill.utils.run import config_dir, exit_on_usage_error, register_resolvers, task_wrapper

log = logging.getLogger("prefdistill.generate")
register_config_groups()  # the teacher group (utils/config_groups.py)
register_resolvers()


def default_out_dir(cfg: DictConfig, spec, source: PromptSource, params) -> Path:
    key = hash_inputs({"model": spec.identity(), "data": source.identity(), "params": params.to_dict(),
                       "template": cfg.generation.generator.get("template", "auto")})  # fmt: skip
    name = Path(spec.name_or_path).name or "model"
    return Path(cfg.paths.cache_dir) / "samples" / f"{name}-{cfg.split}-{key}"


@task_wrapper
def generate(cfg: DictConfig) -> dict:
    spec = instantiate(cfg.model)
    params = instantiate(cfg.generation.params)
    source = PromptSource.of_split(OmegaConf.to_container(cfg.data, resolve=True), cfg.split, cfg.limit)
    out_dir = Path(cfg.out_dir) if cfg.out_dir else default_out_dir(cfg, spec, source, params)
    log.info("sampling %s over %s[%s] -> %s", spec.name_or_path, source.source, source.split, out_dir)
    data = source.load()
    make_generator = instantiate(cfg.generation.generator)  # partial: build_generator(spec)
    gen_cfg = OmegaConf.to_container(cfg.generation.generator, resolve=True)
    meta = {"model": spec.identity(), "backend": gen_cfg["backend"], "template": gen_cfg.get("template", "auto"),
            "data": source.identity()}  # fmt: skip
    generate_to_shards(
        lambda: make_generator(spec), data.prompts, out_dir, params, ids=data.ids,
        references=data.references, shard_size=cfg.shard_size, meta=meta,
    )  # fmt: skip
    records = read_shards(out_dir)
    summary = {"out_dir": str(out_dir), "manifest": str(out_dir / MANIFEST), "prompts": len(data.prompts),
               "records": len(records), "finish_reasons": _count(r["finish_reason"] for r in records)}  # fmt: skip
    run_dir = Path(cfg.paths.output_dir)
    atomic_write_text(run_dir / "config_resolved.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    atomic_write_json(run_dir / "summary.json", summary)
    log.info("wrote %d records (%d prompts x %d) to %s", len(records), len(data.prompts), params.n, out_dir)
    return summary


def _count(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


@hydra.main(config_path=config_dir(), config_name="generate", version_base="1.3")
@exit_on_usage_error
def main(cfg: DictConfig) -> int:
    return generate(cfg)["records"]


if __name__ == "__main__":
    main()
