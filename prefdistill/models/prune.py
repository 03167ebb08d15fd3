"""Layer pruning: a smaller student made of some of a decoder-only model's layers (``ModelSpec.prune``).

    prune: {keep_layers: every_3rd}      # layers 0, 3, 6, ... (as many as fit)
    prune: {keep_layers: spread_10}      # 10 layers evenly spread, first and last included
    prune: {keep_layers: [0, 3, 6, 29]}  # these layers, in this order of depth

Layer dropping as a student initialisation: DistilBERT (Sanh et al., 2019, Sec. 3) initialises its
6-layer student "by taking one layer out of two" of BERT-base; "Shrink and Fine-Tune" (Shleifer & Rush,
2020, Sec. 3.1; huggingface/transformers ``examples/research_projects/seq2seq-distillation/
distillation.py``, ``LAYERS_TO_COPY``) copies maximally spaced layers, always including the first and
the last (12 -> 6 keeps 0, 2, 4, 7, 9, 11). ``every_<k>`` is the first rule, ``spread_<m>`` the second
(``round(i (n - 1) / (m - 1))``, which reproduces the 12 -> 6 and 12 -> 3 tables).

How: the pruned model is *built from its own config* (``num_hidden_layers`` = the kept count, per-layer
lists such as ``layer_types`` cut to the kept layers) and the kept layers' weights are copied in,
renumbered. So every layer index (``layer_idx`` of the attention modules, which the KV cache is indexed
by) and every attribute a model derives from its config at construction time is what
``from_pretrained`` on the saved folder rebuilds: save -> load gives the same logits by construction.

The config records ``pruned_layers = {"from": n, "kept": [...]}``. Loading a folder saved from a
pruned model with the same ``prune`` again (an SFT'd student whose spec still carries it) is a no-op.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence

import torch

PRUNE_KEYS = frozenset({"keep_layers"})
RECORD_KEY = "pruned_layers"
# Where decoder-only models keep their layers: Llama/Mistral/Qwen2/Gemma*/SmolLM2, GPT-2/GPT-Neo, GPT-NeoX.
LAYER_PATHS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers")
# Per-layer config lists cut to the kept layers (and GPT-Neo's attention_types rebuilt from its cut list).
PER_LAYER_KEYS = ("layer_types", "no_rope_layers", "attention_layers")
_RULE = re.compile(r"^(every|spread)_(\d+)(?:st|nd|rd|th)?$")


def check_prune(prune: Mapping) -> dict:
    """The validated ``ModelSpec.prune`` mapping (a clear error for an unknown key or a bad rule)."""
    unknown = set(prune) - PRUNE_KEYS
    if unknown or "keep_layers" not in prune:
        raise ValueError(
            f"ModelSpec.prune takes exactly {sorted(PRUNE_KEYS)}, got {sorted(prune)} "
            "(e.g. prune: {keep_layers: every_3rd} or {keep_layers: [0, 3, 6]})"
        )
    keep = prune["keep_layers"]
    if isinstance(keep, str):
        m = _RULE.match(keep)
        if not m or int(m.group(2)) < 1:
            raise ValueError(f"ModelSpec.prune.keep_layers={keep!r}: use every_<k> (e.g. every_3rd), "
                             "spread_<m> (e.g. spread_10) or a list of layer indices")  # fmt: skip
        return {"keep_layers": keep}
    if not isinstance(keep, Sequence) or not keep or not all(isinstance(i, int) and i >= 0 for i in keep):
        raise ValueError(
            f"ModelSpec.prune.keep_layers must be a rule or a non-empty list of layer indices, got {keep!r}"
        )
    if list(keep) != sorted(set(keep)):
        raise ValueError(f"ModelSpec.prune.keep_layers={list(keep)} must be strictly increasing")
    return {"keep_layers": list(keep)}


def kept_layers(keep: str | Sequence[int], n_layers: int) -> list[int]:
    """The indices ``keep`` selects from ``n_layers`` layers (rules in the module docstring)."""
    if isinstance(keep, str):
        rule, k = _RULE.match(keep).groups()
        k = int(k)
        if rule == "every":
            return list(range(0, n_layers, k))
        if k > n_layers:
            raise ValueError(f"prune spread_{k}: the model has only {n_layers} layers")
        if k == 1:
            return [0]
        return sorted({int(i * (n_layers - 1) / (k - 1) + 0.5) for i in range(k)})
    out = list(keep)
    if out[-1] >= n_layers:
        raise ValueError(f"prune keep_layers={out}: the model has only {n_layers} layers (0..{n_layers - 1})")
    return out


def decoder_layers(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """``(dotted path, ModuleList)`` of the model's decoder layers; a clear error when not found."""
    modules = dict(model.named_modules())
    for path in LAYER_PATHS:
        if isinstance(modules.get(path), torch.nn.ModuleList):
            return path, modules[path]
    raise ValueError(f"cannot prune {type(model).__name__}: no decoder layer list at any of {LAYER_PATHS}")


def pruned_config(config, keep: list[int]):
    """A new config of the same class with only the ``keep`` layers (count and per-layer lists)."""
    n = config.num_hidden_layers
    d = config.to_dict()
    d[config.attribute_map.get("num_hidden_layers", "num_hidden_layers")] = len(keep)
    for key in PER_LAYER_KEYS:
        if isinstance(d.get(key), list):
            d[key] = [d[key][i] for i in keep]
    if isinstance(d.get("attention_types"), list):  # GPT-Neo: attention_layers is expanded from these
        d["attention_types"] = [[[config.attention_layers[i]], 1] for i in keep]
    left = [k for k, v in d.items() if isinstance(v, list) and len(v) == n and k not in PER_LAYER_KEYS]
    if left:
        raise ValueError(f"cannot prune {config.model_type}: config lists {left} may be per-layer; "
                         "add them to prefdistill.models.prune.PER_LAYER_KEYS")  # fmt: skip
    d[RECORD_KEY] = {"from": n, "kept": list(keep)}
    return type(config).from_dict(d)


def _renamed(name: str, prefix: str, new_index: dict[int, int]) -> str | None:
    """``name`` of the full model -> its name in the pruned one (None: a dropped layer's)."""
    if not name.startswith(prefix):
        return name
    index, rest = name[len(prefix) :].split(".", 1)
    return f"{prefix}{new_index[int(index)]}.{rest}" if int(index) in new_index else None


def prune_layers(model, keep_layers: str | Sequence[int]):
    """A new model holding the ``keep_layers`` layers of ``model`` (renumbered) and everything else of it.

    Already pruned by the same rule (recorded in the config): ``model`` itself. Weights are copied, so
    ``model`` can be freed afterwards.
    """
    from transformers.initialization import no_init_weights

    record = getattr(model.config, RECORD_KEY, None)
    if record:
        if record["kept"] == kept_layers(keep_layers, record["from"]):
            return model
        raise ValueError(f"this model was already pruned to layers {record['kept']} of {record['from']}; "
                         f"it cannot also be pruned with keep_layers={keep_layers!r}")  # fmt: skip
    path, layers = decoder_layers(model)
    keep = kept_layers(keep_layers, len(layers))
    config = pruned_config(model.config, keep)
    with no_init_weights():
        pruned = type(model)._from_config(
            config, dtype=model.dtype, attn_implementation=model.config._attn_implementation
        )
    new_index = {old: new for new, old in enumerate(keep)}
    state = {}
    for name, tensor in model.state_dict().items():
        renamed = _renamed(name, f"{path}.", new_index)
        if renamed is not None:
            state[renamed] = tensor
    pruned.load_state_dict(state, strict=True)
    pruned.tie_weights()  # no_init_weights skipped the tying init does (tied embeddings share one tensor)
    pruned.generation_config = copy.deepcopy(model.generation_config)
    pruned.config._name_or_path = model.config._name_or_path
    return pruned.train(model.training)
