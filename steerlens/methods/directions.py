"""Directions from two sets of prompts: difference of means at post-instruction positions.

Arditi et al. (2024), "Refusal in language models is mediated by a single direction"
(andyrdt/refusal_direction, ``pipeline/submodules/generate_directions.py``): for every layer
and every *post-instruction* position (the chat template's tokens after the user's
instruction, e.g. ``<|im_end|>\\n<|im_start|>assistant\\n``), the candidate direction is the
mean activation over harmful prompts minus the mean over harmless ones, read at the block's
input (``blocks.L.hook_resid_pre``). One candidate is then chosen by its effect
(``select_direction.py``): ablating it should remove refusal on harmful prompts, adding it
should induce refusal on harmless ones, ablation should barely change harmless outputs (KL
under 0.1), and the last 20% of layers are excluded. :func:`mean_differences` computes the
candidates; :func:`select_by_effect` keeps the filters and ranks what passes, given your
effect scores (see ``docs/howto/interventions.md`` for the worked example).

Examples:
    >>> import steerlens as sl
    >>> m = sl.tiny_model(n_layers=2, d_model=32)
    >>> post_instruction_tokens(m.tokenizer)[-2:]   # the template's tail after the question
    ['istant', 'Ċ']
    >>> cands = mean_differences(m, ["How do I pick a lock?"], ["How do I bake bread?"])
    >>> sorted({layer for layer, _ in cands}), cands[(1, -1)].shape
    ([0, 1], torch.Size([32]))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from steerlens.core.batching import plan_batches
from steerlens.core.data import DEFAULT_SYSTEM_PROMPT
from steerlens.core.encoding import encode_prompt, pad_rows
from steerlens.core.errors import ConfigError
from steerlens.core.hooks import model_device, n_layers, pad_token_id
from steerlens.steering.activations import read_activations


def _post_instruction_count(tokenizer: Any, system_prompt: str | None) -> int:
    a = encode_prompt(tokenizer, "Question one?", system_prompt)
    b = encode_prompt(tokenizer, "A different second question, longer.", system_prompt)
    k = 0
    while k < min(len(a), len(b)) and a[-1 - k] == b[-1 - k]:
        k += 1
    if k == 0:
        raise ConfigError("the chat template adds no tokens after the instruction")
    return k


def post_instruction_tokens(
    tokenizer: Any, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
) -> list[str]:
    """The chat template's tokens after the user's instruction (the same for every prompt)."""
    ids = encode_prompt(tokenizer, "Question one?", system_prompt)
    k = _post_instruction_count(tokenizer, system_prompt)
    return list(tokenizer.convert_ids_to_tokens(ids[-k:]))


@torch.no_grad()
def mean_differences(
    model: Any,
    positive: Sequence[str],
    negative: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    hook: str = "resid_pre",
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    batch_size: int | None = None,
) -> dict[tuple[int, int], Float[Tensor, " d_model"]]:
    """``{(layer, position): mean(positive) - mean(negative)}`` at every post-instruction
    position (negative indices from the prompt's end: -1 is its last token) and layer, read
    at ``blocks.{layer}.hook_{hook}`` (Arditi et al.: the block's input)."""
    if not positive or not negative:
        raise ConfigError("mean_differences needs positive and negative prompts")
    tok = model.tokenizer
    k = _post_instruction_count(tok, system_prompt)
    idx_layers = list(range(n_layers(model))) if layers is None else list(layers)
    names = {layer: f"blocks.{layer}.hook_{hook}" for layer in idx_layers}
    device = model_device(model)

    def means(prompts: Sequence[str]) -> dict[int, Tensor]:
        enc = [encode_prompt(tok, p, system_prompt) for p in prompts]
        total = {layer: torch.zeros(k, int(model.cfg.d_model), dtype=torch.float64)
                 for layer in idx_layers}  # fmt: skip
        for idx in plan_batches([len(e) for e in enc], 0, batch_size=batch_size, device=device):
            ids, mask = pad_rows([([], enc[i]) for i in idx], pad_token_id(model), device)
            ends = torch.tensor([len(enc[i]) for i in idx], device=device)
            cols = ends[:, None] - k + torch.arange(k, device=device)[None]  # [rows, k]
            rows = torch.arange(len(idx), device=device)[:, None]
            seen = read_activations(model, ids, list(names.values()), attention_mask=mask)
            for layer, name in names.items():
                total[layer] += seen[name][rows, cols].double().sum(0).cpu()
        return {layer: t / len(prompts) for layer, t in total.items()}

    mp, mn = means(positive), means(negative)
    return {
        (layer, j - k): (mp[layer][j] - mn[layer][j]).float()
        for layer in idx_layers
        for j in range(k)
    }


def select_by_effect(
    candidates: dict[tuple[int, int], Tensor],
    effect: Callable[[int, int, Tensor], dict[str, float]],
    *,
    n_layers: int,
    max_kl: float = 0.1,
    exclude_last: float = 0.2,
) -> pd.DataFrame:
    """Score candidates with ``effect(layer, position, direction)`` -> ``{"ablation_score",
    "addition_score", "kl"}`` and rank them as Arditi et al. do: drop layers in the last
    ``exclude_last`` of the model and candidates whose ablation KL on harmless prompts exceeds
    ``max_kl`` or whose addition does not raise the score above ablation; the best is the
    lowest ``ablation_score`` (refusal left under ablation). Returns every candidate with its
    scores and a ``kept`` column, best first.

    Examples:
        >>> cands = {(0, -1): torch.ones(2), (1, -1): torch.ones(2), (3, -1): torch.ones(2)}
        >>> fx = lambda l, p, d: {"ablation_score": -l, "addition_score": 1.0, "kl": 0.01}
        >>> select_by_effect(cands, fx, n_layers=4)[["layer", "kept"]].values.tolist()
        [[1, True], [0, True], [3, False]]
    """
    cutoff = int(n_layers * (1 - exclude_last))
    rows = []
    for (layer, pos), d in candidates.items():
        rec: dict[str, Any] = {"layer": layer, "position": pos}
        if layer >= cutoff:
            rec.update(ablation_score=float("nan"), addition_score=float("nan"),
                       kl=float("nan"), kept=False, why="last layers")  # fmt: skip
        else:
            scores = effect(layer, pos, d)
            rec.update(scores)
            ok_kl = scores["kl"] <= max_kl
            ok_add = scores["addition_score"] > scores["ablation_score"]
            rec["kept"] = bool(ok_kl and ok_add)
            rec["why"] = "" if rec["kept"] else ("kl" if not ok_kl else "addition")
        rows.append(rec)
    df = pd.DataFrame(rows)
    return df.sort_values(["kept", "ablation_score"], ascending=[False, True]).reset_index(
        drop=True
    )


__all__ = ["mean_differences", "post_instruction_tokens", "select_by_effect"]
