"""Every model family steerlens claims: tiny random models built from transformers configs.

For each family: ``apply`` at ``blocks.N.hook_resid_post`` equals the Hugging Face model (built
again from the same seed, no bridge) with a forward hook adding the vector to block N's
output; BiPO with the cache below the layer equals BiPO without it; cached greedy generation
equals uncached; the native module tree generates what the bridge generates; CAA, margins and
the GGUF export run. A config built in code without ``architectures`` gets it inferred.
"""

from __future__ import annotations

import pytest
import torch

import steerlens as sl
from steerlens.core.encoding import encode_pairs, encode_prompt, end_of_turn_id
from steerlens.core.logprobs import batch_logprobs
from steerlens.core.models import bridge_from_hf, smollm2_tokenizer
from steerlens.evaluation.decode import GenRow, generate_rows
from steerlens.methods.prefix import PrefixCache, floor_supported
from steerlens.steering.hookpoints import SteerHook

WIDTH, LAYERS, HEADS = 64, 3, 4


def _config(family: str, vocab: int):
    import transformers as tf

    common = dict(vocab_size=vocab, hidden_size=WIDTH, intermediate_size=2 * WIDTH,
                  num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=2,
                  max_position_embeddings=512)  # fmt: skip
    if family == "llama":
        return tf.LlamaConfig(**common), tf.LlamaForCausalLM
    if family == "qwen2":
        return tf.Qwen2Config(**common), tf.Qwen2ForCausalLM
    if family == "qwen3":
        return tf.Qwen3Config(**common, head_dim=WIDTH // HEADS), tf.Qwen3ForCausalLM
    if family == "mistral":
        return tf.MistralConfig(**common), tf.MistralForCausalLM
    if family == "gemma2":
        return tf.Gemma2Config(**common, head_dim=WIDTH // HEADS), tf.Gemma2ForCausalLM
    if family == "gemma3":
        return tf.Gemma3TextConfig(**common, head_dim=WIDTH // HEADS), tf.Gemma3ForCausalLM
    if family == "phi3":
        return tf.Phi3Config(**common, pad_token_id=0), tf.Phi3ForCausalLM
    if family == "olmo2":
        return tf.Olmo2Config(**common), tf.Olmo2ForCausalLM
    if family == "gpt2":
        cfg = tf.GPT2Config(vocab_size=vocab, n_embd=WIDTH, n_layer=LAYERS, n_head=HEADS,
                            n_positions=512)  # fmt: skip
        return cfg, tf.GPT2LMHeadModel
    if family == "gpt_neox":
        cfg = tf.GPTNeoXConfig(vocab_size=vocab, hidden_size=WIDTH, intermediate_size=2 * WIDTH,
                               num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                               max_position_embeddings=512)  # fmt: skip
        return cfg, tf.GPTNeoXForCausalLM
    raise KeyError(family)


FAMILIES = ["llama", "qwen2", "qwen3", "mistral", "gemma2", "gemma3", "phi3", "olmo2", "gpt2",
            "gpt_neox"]  # fmt: skip


def _hf(family: str, tok, seed: int = 0, architectures: bool = True):
    cfg, cls = _config(family, len(tok))
    if not architectures:
        cfg.architectures = None
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = cls(cfg)
    with torch.no_grad():  # random heads give near-uniform outputs: sharpen them
        model.get_output_embeddings().weight.mul_(8.0)
    return model.eval()


@pytest.fixture(scope="module")
def tok():
    return smollm2_tokenizer()


@pytest.fixture(scope="module")
def bridges(tok):
    out = {}
    for fam in FAMILIES:
        out[fam] = bridge_from_hf(_hf(fam, tok), tok, f"tiny-{fam}", None, torch.float32)
    return out


def _vector(seed: int = 0, layer: int = 1, scale: float = 4.0):
    g = torch.Generator().manual_seed(seed)
    return sl.SteeringVector({f"blocks.{layer}.hook_resid_post": torch.randn(WIDTH, generator=g)
                              * scale}, {"n_layers": LAYERS})  # fmt: skip


def _decoder_layers(hf):
    for path in ("model.layers", "transformer.h", "gpt_neox.layers"):
        obj = hf
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
            return obj
        except AttributeError:
            continue
    raise AssertionError(f"no decoder layers found on {type(hf).__name__}")


@pytest.mark.parametrize("family", FAMILIES)
def test_apply_equals_hf_forward_hook(bridges, tok, family):
    model = bridges[family]
    plain = _hf(family, tok)  # same seed, no bridge anywhere
    v = _vector()
    vec = v.vectors["blocks.1.hook_resid_post"]
    ids = torch.tensor([encode_prompt(tok, "Would you like more power?")])

    def hook(module, args, output):
        if isinstance(output, tuple):
            return (output[0] + 2.0 * vec, *output[1:])
        return output + 2.0 * vec

    h = _decoder_layers(plain)[1].register_forward_hook(hook)
    try:
        with torch.no_grad():
            want = plain(ids).logits
    finally:
        h.remove()
    with torch.no_grad(), v.apply(model, 2.0):
        got = model(ids)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), float((got - want).abs().max())
    assert sl.active_hooks(model) == []


@pytest.mark.parametrize("family", FAMILIES)
def test_bipo_cache_equals_no_cache(bridges, tok, family):
    """BiPO's log-probs and gradients through the cache below the layer equal the full
    forward's, and training runs both ways with the same losses. (Trained vectors are not
    compared to 1e-5: Adam moves every component by about lr on the first step whatever the
    gradient's size, so float noise in a near-zero gradient component (6e-5 in summed
    log-probs on gpt2) can flip its sign.)"""
    model = bridges[family]
    pairs = sl.load_pairs(sl.demo_data_path("train"))[:6]
    enc = encode_pairs(tok, pairs)
    names = ["blocks.1.hook_resid_post"]
    kw = dict(epochs=1, batch_size=3, lr=1e-2, warmup_steps=0, progress=False)
    if not floor_supported(model, names):  # e.g. gemma2's logit soft-cap: the full forward
        assert family == "gemma2", f"{family}: the cache below the layer was refused"
        full = sl.train_bipo(model, pairs, layers=1, config=sl.BiPOConfig(cache_mb=0, **kw))
        cached = sl.train_bipo(model, pairs, layers=1, config=sl.BiPOConfig(cache_mb=256, **kw))
        assert cached.allclose(full, atol=0, rtol=0)
        return
    cache = PrefixCache(model, enc, names)
    base = torch.randn(WIDTH, generator=torch.Generator().manual_seed(3)) * 2
    out = []
    for path in ("full", "cache"):
        p = base.clone().requires_grad_(True)
        hooks = [(names[0], SteerHook(p, 1.0, "all"))]
        idx = [0, 1, 2, 3]
        lp = (
            batch_logprobs(model, [enc[i] for i in idx], hooks)
            if path == "full"
            else (cache.logprobs(idx, hooks))
        )
        loss = (lp * torch.linspace(0.5, 1.5, lp.shape[0])).sum()
        out.append((lp.detach(), torch.autograd.grad(loss, [p])[0]))
    (lp_a, g_a), (lp_b, g_b) = out
    assert torch.allclose(lp_a, lp_b, atol=1e-4, rtol=1e-5)
    assert torch.allclose(g_a, g_b, atol=1e-4, rtol=1e-3)
    full = sl.train_bipo(model, pairs, layers=1, config=sl.BiPOConfig(cache_mb=0, **kw))
    cached = sl.train_bipo(model, pairs, layers=1, config=sl.BiPOConfig(cache_mb=256, **kw))
    for a, b in zip(full.metadata["history"], cached.metadata["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
def test_generation_cached_uncached_native_bridge(bridges, tok, family):
    model = bridges[family]
    v = _vector(1)
    x = torch.tensor([encode_prompt(tok, "Tell me a story.")])
    outs = []
    for cache in (True, False):
        with v.apply(model, 1.0):
            outs.append(model.generate(x, max_new_tokens=6, do_sample=False, verbose=False,
                                       use_past_kv_cache=cache, stop_at_eos=False))  # fmt: skip
    assert torch.equal(outs[0], outs[1])
    eot = end_of_turn_id(tok)
    rows = [GenRow(tuple(encode_prompt(tok, p)), v, m)
            for p in ("Tell me a story.", "Hi") for m in (0.0, 1.0)]  # fmt: skip
    got = {b: generate_rows(model, rows, max_new_tokens=6, eos_token_id=eot, backend=b)
           for b in ("auto", "bridge")}  # fmt: skip
    assert got["auto"] == got["bridge"]


@pytest.mark.parametrize("family", FAMILIES)
def test_caa_margins_and_gguf_export(bridges, family, tmp_path):
    model = bridges[family]
    pairs = sl.load_pairs(sl.demo_data_path("train"))[:4]
    v = sl.caa_vector(model, pairs, layers=2, progress=False)
    df = sl.preference_margin(model, v, pairs, multipliers=(-1, 0, 1), progress=False)
    assert df["margin"].notna().all() and len(df) == 3
    back = sl.SteeringVector.from_gguf(v.to_gguf(tmp_path / "v.gguf"))
    assert back.allclose(v)


@pytest.mark.parametrize("family", ["gemma3", "olmo2", "llama"])
def test_config_without_architectures_is_inferred(tok, family):
    hf = _hf(family, tok, architectures=False)
    model = bridge_from_hf(hf, tok, f"no-arch-{family}", None, torch.float32)
    assert model.cfg.n_layers == LAYERS
