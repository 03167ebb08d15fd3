"""Checkpoints -> a plain-transformers ``save_pretrained`` folder; the final model save of a run.

    pd-convert logs/train/runs/<run>/checkpoints/last.ckpt  out/model            # LoRA: the adapter
    pd-convert logs/train/runs/<run>/checkpoints/last.ckpt  out/model --merge    # + out/model/merged

The checkpoint is a DeepSpeed checkpoint folder (ZeRO-2 or ZeRO-3, any number of ranks; the
fp32 master weights are consolidated with DeepSpeed's ``zero_to_fp32``, as Lightning's
``convert_zero_checkpoint_to_fp32_state_dict`` does, without writing an intermediate file) or a
plain Lightning ``.ckpt`` file. Our checkpoints hold only what training changes (the LoRA adapters,
or the whole policy when fully fine-tuned; DeepSpeed profiles set ``exclude_frozen_parameters``),
so the policy is rebuilt from the run's model spec (``<run>/policy_spec.json``, written by
``train.py``; else the ``model`` node of ``<run>/config_resolved.yaml``) and the checkpoint's
weights are loaded into it. The output is what ``prefdistill.models.merge_and_save`` writes at the
end of a run: a PEFT adapter folder (``merge=True`` adds a merged full model in ``merged/``) or a
full model, with the tokenizer.

:func:`save_final_policy` is that end-of-run save. Under ZeRO-3 the in-memory policy is
partitioned across ranks (each holds empty placeholders), so its trainable weights are gathered
one parameter at a time onto rank 0 and loaded into a freshly built policy there.

Frozen weights always come from the spec, which reproduces them exactly for pretrained weights.
(A ``random_init`` model is initialised differently inside ZeRO-3's ``zero.Init``, so LoRA on a
random model -- tests only -- trained under ZeRO-3 is saved on the spec's base, not the one it
trained on; fully fine-tuned models are unaffected: every weight is trainable.)
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from prefdistill.models import ModelSpec, load_model, load_tokenizer, merge_and_save, run_spec
from prefdistill.models.spec import RUN_SPEC_FILES

log = logging.getLogger(__name__)

POLICY_PREFIX = "policy."  # the policy's attribute name in every training module
SCORE_HEAD = "score"  # the head module of every decoder family's *ForSequenceClassification


# -- run folder -------------------------------------------------------------------------------


def run_dir_of(checkpoint: str | Path) -> Path:
    """``<run>`` for ``<run>/checkpoints/<name>`` (and for ``<run>/hpc_ckpt_<n>.ckpt``)."""
    parent = Path(checkpoint).resolve().parent
    return parent.parent if parent.name == "checkpoints" else parent


def policy_spec_of_run(run_dir: str | Path) -> ModelSpec:
    spec = run_spec(run_dir, "policy")
    if spec is None:
        raise FileNotFoundError(
            f"no {RUN_SPEC_FILES['policy']} or config_resolved.yaml in {run_dir}: pass the run folder (--run-dir)"
        )
    return spec


# -- checkpoint -> weights --------------------------------------------------------------------


def is_deepspeed_checkpoint(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "latest").is_file()


def checkpoint_policy_state(checkpoint: str | Path, tag: str | None = None) -> dict[str, torch.Tensor]:
    """The policy weights a checkpoint holds (fp32 for DeepSpeed), named as in ``policy.state_dict()``."""
    checkpoint = Path(checkpoint)
    if is_deepspeed_checkpoint(checkpoint):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint), tag, exclude_frozen_parameters=True)
    elif checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    else:
        raise FileNotFoundError(
            f"{checkpoint} is neither a checkpoint file nor a DeepSpeed checkpoint folder"
        )
    state = {k.removeprefix("_forward_module."): v for k, v in state.items()}  # Lightning < 2.1 wrapper
    policy = {k[len(POLICY_PREFIX) :]: v for k, v in state.items() if k.startswith(POLICY_PREFIX)}
    if not policy:
        raise ValueError(f"{checkpoint} holds no '{POLICY_PREFIX}*' weights: not a prefdistill checkpoint")
    return policy


def head_of_state(state: Mapping[str, torch.Tensor]) -> str:
    """``"score"`` when the weights include a sequence classifier's head (a reward model), else ``"lm"``.

    A reward model's head is always trained (LoRA keeps it in ``modules_to_save``), so its checkpoint holds it.
    """
    return "score" if any(SCORE_HEAD in key.split(".")[:-1] for key in state) else "lm"


def policy_with_weights(spec: ModelSpec, state: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """A fresh policy built from ``spec`` (on CPU, LoRA-wrapped if the spec says so) with ``state`` loaded.

    ``state`` must hold every trainable parameter; frozen ones not in it come from the spec. A state with a
    score head (:func:`head_of_state`) rebuilds a reward model.
    """
    model = load_model(spec, trainable=True, head=head_of_state(state))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    known = set(model.state_dict())
    unexpected = sorted(set(state) - known)
    missing = sorted(trainable - set(state))
    if unexpected or missing:
        raise ValueError(
            f"checkpoint does not fit the policy {spec.name_or_path!r} (LoRA: {bool(spec.lora)}): "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, "
            f"missing trainable {missing[:5]}{'...' if len(missing) > 5 else ''}"
        )
    model.load_state_dict(dict(state), strict=False)
    return model.eval()


def convert_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    run_dir: str | Path | None = None,
    merge: bool = False,
    tag: str | None = None,
) -> Path:
    """Write ``checkpoint``'s policy to ``out_dir`` as ``merge_and_save`` does; returns ``out_dir``."""
    spec = policy_spec_of_run(run_dir or run_dir_of(checkpoint))
    state = checkpoint_policy_state(checkpoint, tag)
    model = policy_with_weights(spec, state)
    standalone = head_of_state(state) != "lm"  # a reward model is saved merged, loadable on its own
    out = merge_and_save(model, load_tokenizer(spec), out_dir, merge=merge, standalone=standalone)
    log.info("converted %s -> %s", checkpoint, out)
    return out


# -- the end-of-run save ------------------------------------------------------------------------


def gather_trainable_state(policy: torch.nn.Module, rank_zero: bool) -> dict[str, torch.Tensor] | None:
    """The trainable weights of a ZeRO-3-partitioned ``policy`` on CPU on rank 0 (None elsewhere).

    A collective: every rank must call it. One parameter is gathered at a time, so no rank ever
    holds more than the largest parameter beyond its own partition.
    """
    import deepspeed

    state = {}
    for name, param in policy.named_parameters():
        if not param.requires_grad:
            continue
        with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
            if rank_zero:
                state[name] = param.detach().to("cpu", copy=True)
    return state if rank_zero else None


def save_final_policy(trainer, module, spec: ModelSpec, tokenizer, out_dir: str | Path, *, merge: bool):
    """Save the trained policy as a ``save_pretrained`` folder on global rank 0; returns it (None elsewhere).

    Call it on every rank: under DeepSpeed ZeRO-3 the weights are gathered collectively first.
    """
    standalone = module.policy_head != "lm"  # a reward model is saved merged, loadable on its own
    if getattr(trainer.strategy, "zero_stage_3", False):
        state = gather_trainable_state(module.policy, trainer.is_global_zero)
        if not trainer.is_global_zero:
            return None
        model = policy_with_weights(spec, state)
        return merge_and_save(model, tokenizer, out_dir, merge=merge, standalone=standalone)
    if not trainer.is_global_zero:
        return None
    return merge_and_save(module.policy, tokenizer, out_dir, merge=merge, standalone=standalone)


def saved_model(model_dir: str | Path, spec: ModelSpec) -> dict:
    """How a run's model was saved, for the log line and ``metrics.json``: ``format`` ("LoRA adapter" or "full
    model"), ``base`` (an adapter's ``base_model_name_or_path``: the hub id also when the base weights came from
    the offline fallback), ``merged`` (the merged copy ``save_merged=true`` wrote, or None) and, when the base
    weights were not loaded from ``base`` itself, ``base_weights`` saying from where."""
    import json

    from prefdistill.models.load import fallback_used

    model_dir = Path(model_dir)
    adapter = model_dir / "adapter_config.json"
    info: dict = {"path": str(model_dir), "format": "LoRA adapter" if adapter.is_file() else "full model"}
    if adapter.is_file():
        info["base"] = json.loads(adapter.read_text()).get("base_model_name_or_path")
        info["merged"] = str(model_dir / "merged") if (model_dir / "merged").is_dir() else None
    if fallback_used(spec):
        info["base_weights"] = fallback_used(spec)
    return info


def describe_saved(info: dict) -> str:
    """``saved_model``'s record as one phrase: "LoRA adapter over <base> (...)" or "full model"."""
    text = info["format"] + (f" over {info['base']}" if info.get("base") else "")
    notes = [f"base weights from {info['base_weights']}"] if info.get("base_weights") else []
    notes += [f"merged copy in {info['merged']}"] if info.get("merged") else []
    return text + (f" ({'; '.join(notes)})" if notes else "")


# -- command line -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``pd-convert``: returns the exit status (0: converted, the output folder printed); a checkpoint or
    run folder that cannot be read ends with status 1 and one line saying why."""
    parser = argparse.ArgumentParser(
        prog="pd-convert",
        description="Checkpoint of a prefdistill run (DeepSpeed ZeRO-2/3 folder or Lightning .ckpt) "
        "-> a save_pretrained folder (LoRA: the adapter; --merge adds a merged model in <out>/merged).",
    )
    parser.add_argument("checkpoint", help="e.g. logs/train/runs/<run>/checkpoints/last.ckpt")
    parser.add_argument("out_dir", help="output folder (written atomically)")
    parser.add_argument(
        "--run-dir", help="the run folder, if the checkpoint is not inside <run>/checkpoints/"
    )
    parser.add_argument("--merge", action="store_true", help="also write a merged full model (LoRA runs)")
    parser.add_argument("--tag", help="DeepSpeed checkpoint tag (default: the folder's 'latest')")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        out = convert_checkpoint(
            args.checkpoint, args.out_dir, run_dir=args.run_dir, merge=args.merge, tag=args.tag
        )
    except (FileNotFoundError, ValueError) as err:  # not a checkpoint, no run folder, another model's weights
        parser.exit(1, f"pd-convert: {err}\n")
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
