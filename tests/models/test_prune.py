"""Layer pruning (``ModelSpec.prune``): the rules, parameter counts by hand, equality with a hand-built
model, KV-cached generation, and the save -> load round trip, on tiny Llama, Gemma-3, GPT-2 and GPT-Neo."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from prefdistill.models import ModelSpec, load_model
from prefdistill.models.prune import RECORD_KEY, decoder_layers, kept_layers, prune_layers

IDS = torch.tensor([[3, 17, 42, 9, 100, 7], [5, 5, 61, 2, 33, 8]])


def _six_layers(spec: ModelSpec, **prune) -> ModelSpec:
    return dataclasses.replace(
        spec, random_init={**spec.random_init, "num_hidden_layers": 6}, prune=prune or None
    )


def _logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize(
    ("rule", "n", "want"),
    [
        ("every_3rd", 30, [0, 3, 6, 9, 12, 15, 18, 21, 24, 27]),
        ("every_2", 5, [0, 2, 4]),
        ("every_1st", 3, [0, 1, 2]),
        # Shrink and Fine-Tune's LAYERS_TO_COPY: 12 -> 6 keeps 0,2,4,7,9,11; 12 -> 3 keeps 0,6,11
        ("spread_6", 12, [0, 2, 4, 7, 9, 11]),
        ("spread_3", 12, [0, 6, 11]),
        ("spread_10", 30, [0, 3, 6, 10, 13, 16, 19, 23, 26, 29]),
        ("spread_1", 4, [0]),
        ([1, 3], 4, [1, 3]),
    ],
)
def test_kept_layers_rules(rule, n, want):
    assert kept_layers(rule, n) == want


@pytest.mark.parametrize(
    ("prune", "match"),
    [
        ({"keep": "every_3rd"}, "takes exactly"),
        ({"keep_layers": "every_third"}, "every_<k>"),
        ({"keep_layers": "every_0"}, "every_<k>"),
        ({"keep_layers": [3, 1]}, "strictly increasing"),
        ({"keep_layers": [0, 0]}, "strictly increasing"),
        ({"keep_layers": []}, "non-empty"),
        ({"keep_layers": [-1]}, "non-empty"),
    ],
)
def test_bad_prune_spec_is_a_clear_error(prune, match):
    with pytest.raises(ValueError, match=match):
        ModelSpec("tiny", prune=prune)


def test_identity_includes_the_pruning(tiny_spec):
    pruned = dataclasses.replace(tiny_spec, prune={"keep_layers": [0]})
    assert pruned.identity()["prune"] == {"keep_layers": [0]}
    assert "prune" not in tiny_spec.identity() and pruned.identity() != tiny_spec.identity()


def test_pruned_tiny_has_the_kept_layers_and_parameters(tiny_spec):
    full = load_model(_six_layers(tiny_spec), trainable=False)
    model = load_model(_six_layers(tiny_spec, keep_layers="every_2nd"), trainable=False)
    # per layer: q 64*64 + k 64*32 + v 64*32 + o 64*64 = 12288; mlp 3*64*128 = 24576; 2 norms 128
    # -> 36992; embeddings 624*64 = 39936 (tied with the head); final norm 64
    assert sum(p.numel() for p in full.parameters()) == 39936 + 64 + 6 * 36992 == 261952
    assert sum(p.numel() for p in model.parameters()) == 39936 + 64 + 3 * 36992 == 150976
    assert model.config.num_hidden_layers == 3 and len(model.model.layers) == 3
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1, 2]
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied
    assert getattr(model.config, RECORD_KEY) == {"from": 6, "kept": [0, 2, 4]}
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    for new, old in zip(model.model.layers, [full.model.layers[i] for i in (0, 2, 4)]):
        assert all(torch.equal(a, b) for a, b in zip(new.state_dict().values(), old.state_dict().values()))


def test_pruned_equals_a_hand_built_model(tiny_spec):
    full = load_model(_six_layers(tiny_spec), trainable=False)
    model = load_model(_six_layers(tiny_spec, keep_layers=[1, 4]), trainable=False)
    config = AutoConfig.for_model(**{**full.config.to_dict(), "num_hidden_layers": 2})
    hand = AutoModelForCausalLM.from_config(config).eval()
    state = {k: v for k, v in full.state_dict().items() if not k.startswith("model.layers.")}
    for new, old in enumerate((1, 4)):
        prefix = f"model.layers.{old}."
        state.update({f"model.layers.{new}.{k[len(prefix):]}": v for k, v in full.state_dict().items()
                      if k.startswith(prefix)})  # fmt: skip
    hand.load_state_dict(state, strict=True)
    assert torch.equal(_logits(model), _logits(hand))
    assert not torch.allclose(_logits(model), _logits(full))  # the dropped layers did something


def _check_cache_and_round_trip(model, tmp_path):
    """Greedy generation with the KV cache equals it without; save -> load gives identical logits."""
    kwargs = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    cached = model.generate(IDS, use_cache=True, **kwargs)
    assert cached.shape == (2, IDS.shape[1] + 6)
    assert torch.equal(cached, model.generate(IDS, use_cache=False, **kwargs))
    model.save_pretrained(tmp_path / "pruned")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned").eval()
    assert torch.equal(_logits(model), _logits(again))
    return again


def test_llama_generates_and_round_trips(tiny_spec, tmp_path):
    spec = _six_layers(tiny_spec, keep_layers="every_3rd")
    model = load_model(spec, trainable=False)
    again = _check_cache_and_round_trip(model, tmp_path)
    # the saved folder, loaded with the same pruning (an SFT'd student's spec keeps it): unchanged
    reloaded = load_model(
        ModelSpec(str(tmp_path / "pruned"), tokenizer="tiny", prune=spec.prune), trainable=False
    )
    assert reloaded.config.num_hidden_layers == again.config.num_hidden_layers == 2
    assert torch.equal(_logits(reloaded), _logits(model))
    with pytest.raises(ValueError, match="already pruned to layers \\[0, 3\\] of 6"):
        prune_layers(again, [0])


def test_lora_on_a_pruned_model_trains_only_adapters(tiny_spec):
    spec = dataclasses.replace(_six_layers(tiny_spec, keep_layers=[0, 5]), lora={"r": 2})
    model = load_model(spec)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert {n.split("layers.")[1].split(".")[0] for n in names} == {"0", "1"}


def _tiny(model_type: str, **kw):
    config = AutoConfig.for_model(model_type, vocab_size=128, **kw)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def test_gemma3_layer_types_follow_the_kept_layers(tmp_path):
    model = _tiny(
        "gemma3_text", hidden_size=32, intermediate_size=64, num_hidden_layers=6, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, sliding_window=4, sliding_window_pattern=3,
    )  # fmt: skip
    types = model.config.layer_types
    assert types == ["sliding_attention", "sliding_attention", "full_attention"] * 2
    pruned = prune_layers(model, [0, 2, 3])
    assert pruned.config.layer_types == [types[0], types[2], types[3]]
    assert [layer.self_attn.is_sliding for layer in pruned.model.layers] == [True, False, True]
    again = _check_cache_and_round_trip(pruned, tmp_path)
    assert again.config.layer_types == pruned.config.layer_types


def test_gpt2_and_gpt_neo_prune_their_blocks(tmp_path):
    gpt2 = prune_layers(_tiny("gpt2", n_embd=32, n_layer=4, n_head=2), "every_2nd")
    assert decoder_layers(gpt2)[0] == "transformer.h" and gpt2.config.n_layer == 2
    assert [block.attn.layer_idx for block in gpt2.transformer.h] == [0, 1]
    _check_cache_and_round_trip(gpt2, tmp_path / "gpt2")
    neo = _tiny("gpt_neo", hidden_size=32, num_layers=4, num_heads=2, attention_types=[[["global", "local"], 2]],
                window_size=4)  # fmt: skip
    pruned = prune_layers(neo, [1, 2])
    assert pruned.config.num_layers == 2 and pruned.config.attention_layers == ["local", "global"]
    _check_cache_and_round_trip(pruned, tmp_path / "neo")


def test_unknown_layout_is_a_clear_error():
    class NoLayers(torch.nn.Module):
        pass

    with pytest.raises(ValueError, match="no decoder layer list"):
        decoder_layers(NoLayers())
