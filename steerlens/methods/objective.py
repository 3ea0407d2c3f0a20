"""BiPO's objective on one batch (Cao et al., NeurIPS 2024; the formula is in
:mod:`steerlens.methods.bipo`), and freezing a model's weights while a vector trains.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from steerlens.core.encoding import EncodedPair
from steerlens.core.logprobs import Hooks, batch_logprobs
from steerlens.steering.hookpoints import SteerHook

#: computes one batch's ``[matching_1..B, not_matching_1..B]`` log-probs under some hooks
LogprobsFn = Callable[[Hooks], Tensor]


def bipo_loss(
    model: Any,
    batch: Sequence[EncodedPair],
    hook_names: Sequence[str],
    vectors: Sequence[Float[Tensor, " d_model"]],
    d: float,
    beta: float,
    ref: Float[Tensor, "batch 2"],
    share_prompt: bool = True,
    *,
    logprobs_fn: LogprobsFn | None = None,
) -> tuple[Float[Tensor, ""], Float[Tensor, " batch"]]:
    """The BiPO loss on one batch of encoded pairs, and the per-pair ``z``.

    ``ref`` holds the unsteered ``[log p_0(r_T|x), log p_0(r_O|x)]`` per pair. With
    ``share_prompt`` both answers of a pair continue one steered prompt (one packed row, see
    :func:`~steerlens.core.logprobs.batch_logprobs`); the loss is the same. ``logprobs_fn(hooks)``,
    if given, computes the batch's steered log-probs instead of ``batch_logprobs`` (the
    trainer passes :meth:`steerlens.methods.prefix.PrefixCache.logprobs`, which starts at the
    steered layer).

    Examples:
        >>> import torch, steerlens as sl
        >>> from steerlens.core.encoding import encode_pairs
        >>> from steerlens.core.logprobs import pair_logprobs
        >>> m = sl.tiny_model(n_layers=2)
        >>> enc = encode_pairs(m.tokenizer, [sl.PreferencePair("Q?", "Yes.", "No.")])
        >>> v = torch.zeros(64, requires_grad=True)
        >>> loss, z = bipo_loss(m, enc, ["blocks.1.hook_resid_post"], [v], 1.0, 0.1,
        ...                     pair_logprobs(m, enc))
        >>> round(loss.item(), 4)  # v = 0: z = 0 and the loss is log 2
        0.6931
    """
    hooks = [(n, SteerHook(v, float(d), "all")) for n, v in zip(hook_names, vectors, strict=True)]
    if logprobs_fn is not None:
        lp = logprobs_fn(hooks)
    else:
        lp = batch_logprobs(model, batch, hooks, share_prompt)
    b = ref.shape[0]
    ref = ref.to(lp.device, lp.dtype)
    z = (lp[:b] - ref[:, 0]) - (lp[b:] - ref[:, 1])
    loss = -F.logsigmoid(d * beta * z).mean()
    return loss, z


@contextlib.contextmanager
def frozen(model: Any) -> Iterator[None]:
    """Turn off ``requires_grad`` on every model parameter, restoring it afterwards."""
    saved = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in saved:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)
