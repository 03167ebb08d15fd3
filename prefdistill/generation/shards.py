"""Resumable, sharded sampling to disk: ``generate_to_shards`` (any prompts) and ``sample_split`` (a data split).

Layout of ``out_dir``::

    manifest.json        {"config": {params, model identity, data identity, shard_size, ...}, "complete": bool}
    shard-00000.jsonl    prompts [0, shard_size): one line per (prompt, sample), sorted by (index, sample)
    shard-00001.jsonl    ...

A line is ``{"index", "id", "sample", "prompt", "response", "num_tokens", "finish_reason"[, "reference"]}``.
Each shard is written to a temporary sibling and renamed when finished, so a shard file on disk is
always complete. A killed run re-run with the same settings generates only the missing shards;
with different settings (another model, other sampling parameters or prompts) it refuses instead
of mixing the two. Sample ``j`` of prompt ``i`` is seeded by ``(seed, i, j)``, so a resumed run
draws what an uninterrupted run would have drawn.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from prefdistill.data.records import Prompt
from prefdistill.generation.base import Generator, SamplingParams, build_generator
from prefdistill.utils.atomic import atomic_file, atomic_write_json
from prefdistill.utils.cache import content_hash

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_TMP = re.compile(r"^\.shard-(\d+)\.jsonl\.tmp-(\d+)-[0-9a-f]+$")


def shard_path(out_dir: Path, k: int) -> Path:
    return Path(out_dir) / f"shard-{k:05d}.jsonl"


@dataclass(frozen=True)
class PromptSet:
    prompts: list[Prompt]
    ids: list[str]
    references: list[str | None]


@dataclass(frozen=True)
class PromptSource:
    """Which prompts to sample for: one split of a data source (``prefdistill.data.load_records``)."""

    source: str = "shipped"
    split: str = "train"  # the source's own split name
    path: str | None = None
    name: str | None = None
    fields: dict | None = None
    limit: int | None = None

    def load(self) -> PromptSet:
        from prefdistill.data.loading import load_records

        fields = dict(self.fields) if self.fields else None
        rows = load_records(
            self.source, self.split, path=self.path, name=self.name,
            record_type="sft", fields=fields, limit=self.limit,
        )  # fmt: skip
        return PromptSet(
            [r.prompt for _, r in rows], [r.id or str(i) for i, r in rows], [r.response for _, r in rows]
        )

    def identity(self) -> dict:
        return asdict(self)

    @classmethod
    def of_split(cls, data: Mapping[str, Any], split: str, limit: int | None = None) -> PromptSource:
        """The prompts of ``split`` of a data config (a plain ``configs/data/*.yaml`` mapping): its source,
        path and split names. A single-file ``path`` holds one split only, read as ``train``."""
        splits = dict(data.get("splits") or {})
        path = data.get("path")
        single_file = path is not None and Path(path).expanduser().is_file()
        source_split = "train" if single_file else (splits.get(split) or split)
        fields = dict(data["fields"]) if data.get("fields") else None
        return cls(data["source"], source_split, path, data.get("name"), fields, limit)


def _clean_stale_tmp(out_dir: Path, shards: Sequence[int]) -> None:
    """Remove half-written ``shards`` left by a killed process (never those of a live one; only this rank's
    shards, whose writers, if any, ran on this machine)."""
    for p in out_dir.iterdir():
        m = _TMP.match(p.name)
        if m and int(m.group(1)) in shards and not _alive(int(m.group(2))):
            p.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_manifest(out_dir: Path, config: dict) -> None:
    path = out_dir / MANIFEST
    if path.is_file():
        old, config = json.loads(path.read_text())["config"], json.loads(json.dumps(config, default=str))
        if old != config:
            diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            raise ValueError(
                f"{out_dir} holds samples made with other settings (differs in {diff}); "
                "use another output folder or delete this one"
            )
    else:
        atomic_write_json(path, {"config": config, "complete": False})


def generate_to_shards(
    generator: Generator | Callable[[], Generator],
    prompts: Sequence[Prompt],
    out_dir: str | os.PathLike,
    params: SamplingParams,
    *,
    ids: Sequence[str] | None = None,
    references: Sequence[str | None] | None = None,
    shard_size: int = 64,
    meta: dict | None = None,
    progress: bool = True,
    part: tuple[int, int] = (0, 1),
) -> Path:
    """Sample ``params.n`` responses per prompt into ``out_dir`` shards; resume what is missing.

    ``generator`` may be a zero-argument factory: it is called only if a shard is missing, so
    re-running a finished job does not load the model. ``meta`` (model identity, backend, data) is
    stored in the manifest and must match on resume. Returns ``out_dir``.

    ``part=(rank, world)``: this process generates only the shards ``k`` with ``k % world == rank`` and
    leaves the manifest unfinished; once every rank's part is done, one process calls
    :func:`finish_shards`. The samples do not depend on who draws them (seeded by prompt and sample).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = [str(i) for i in range(len(prompts))] if ids is None else [str(i) for i in ids]
    config = {
        "params": params.to_dict(), "shard_size": shard_size, "num_prompts": len(prompts),
        "prompts_sha256": content_hash(list(prompts)), **(meta or {}),
    }  # fmt: skip
    _check_manifest(out_dir, config)
    rank, world = part
    mine = range(rank, -(-len(prompts) // shard_size), world)
    _clean_stale_tmp(out_dir, mine)
    todo = [k for k in mine if not shard_path(out_dir, k).is_file()]
    log.info("%s: %d/%d shards of rank %d of %d done, %d to generate", out_dir, len(mine) - len(todo), len(mine),
             rank, world, len(todo))  # fmt: skip
    size = sum(len(range(k * shard_size, min((k + 1) * shard_size, len(prompts)))) for k in mine)
    left = sum(len(range(k * shard_size, min((k + 1) * shard_size, len(prompts)))) for k in todo)
    bar = tqdm(total=size, initial=size - left, desc="prompts", unit="prompt", disable=not progress)
    gen = None
    for k in todo:
        if gen is None:
            gen = generator if hasattr(generator, "generate_completions") else generator()
        lo, hi = k * shard_size, min((k + 1) * shard_size, len(prompts))
        rows = gen.generate_completions(prompts[lo:hi], params, keys=list(range(lo, hi)))
        with atomic_file(shard_path(out_dir, k)) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                for i, samples in zip(range(lo, hi), rows):
                    for j, c in enumerate(samples):
                        line = {"index": i, "id": ids[i], "sample": j, "prompt": prompts[i], "response": c.text,
                                "num_tokens": c.num_tokens, "finish_reason": c.finish_reason}  # fmt: skip
                        if references is not None and references[i] is not None:
                            line["reference"] = references[i]
                        f.write(json.dumps(line, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
        log.info("%s: rank %d of %d wrote %s", out_dir, rank, world, shard_path(out_dir, k).name)
        bar.update(hi - lo)
    bar.close()
    return finish_shards(out_dir) if world == 1 else out_dir


def finish_shards(out_dir: str | os.PathLike) -> Path:
    """Mark ``out_dir``'s manifest complete once every shard exists (after every rank's part)."""
    out_dir = Path(out_dir)
    config = json.loads((out_dir / MANIFEST).read_text())["config"]
    n_shards = -(-config["num_prompts"] // config["shard_size"])
    missing = [shard_path(out_dir, k).name for k in range(n_shards) if not shard_path(out_dir, k).is_file()]
    if missing:
        raise FileNotFoundError(f"{out_dir}: shards {missing} are missing; a rank did not finish its part")
    atomic_write_json(out_dir / MANIFEST, {"config": config, "complete": True, "num_shards": n_shards})
    return out_dir


def read_shards(out_dir: str | os.PathLike) -> list[dict]:
    """All records of a finished ``out_dir``, sorted by (index, sample); checks none is missing or doubled."""
    out_dir = Path(out_dir)
    config = json.loads((out_dir / MANIFEST).read_text())["config"]
    n_prompts, n, size = config["num_prompts"], config["params"]["n"], config["shard_size"]
    records = []
    for k in range(-(-n_prompts // size)):
        path = shard_path(out_dir, k)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: the sampling run did not finish (re-run it to resume)"
            )
        with open(path, encoding="utf-8") as f:
            records.extend(json.loads(line) for line in f if line.strip())
    records.sort(key=lambda r: (r["index"], r["sample"]))
    got = [(r["index"], r["sample"]) for r in records]
    if got != [(i, j) for i in range(n_prompts) for j in range(n)]:
        raise ValueError(f"{out_dir}: expected one record per (prompt, sample) for {n_prompts} x {n}")
    return records


def responses_by_prompt(records: Sequence[dict]) -> list[list[str]]:
    """``[[sample 0, sample 1, ...] per prompt]`` from ``read_shards`` output."""
    out: list[list[str]] = []
    for r in records:
        if r["sample"] == 0:
            out.append([])
        out[-1].append(r["response"])
    return out


def sample_split(
    spec,
    source: PromptSource,
    out_dir: str | os.PathLike,
    params: SamplingParams,
    *,
    backend: str = "hf",
    batch_size: int = 16,
    shard_size: int = 64,
    template: str = "auto",
    backend_kwargs: dict | None = None,
    progress: bool = True,
) -> Path:
    """Sample ``spec`` over ``source`` into resumable shards at ``out_dir`` (see module docstring)."""
    data = source.load()
    meta = {"model": spec.identity(), "backend": backend, "template": template, "data": source.identity()}

    def make() -> Generator:
        kw = {"template": template, **(backend_kwargs or {})}
        return build_generator(spec, backend=backend, batch_size=batch_size, **kw)

    return generate_to_shards(
        make, data.prompts, out_dir, params, ids=data.ids, references=data.references,
        shard_size=shard_size, meta=meta, progress=progress,
    )  # fmt: skip
