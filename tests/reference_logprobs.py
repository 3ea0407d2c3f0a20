"""Independent reference computations shared by the tests (no steerlens code)."""

from __future__ import annotations

import torch


def seq_logprob(hf, layer, edit, prompt, answer):
    """Summed log p(answer | prompt) from a plain HF model whose decoder layer ``layer``
    output is replaced by ``edit(h)`` at every position (a torch forward hook)."""

    def hook(module, args, output):
        if isinstance(output, tuple):
            return (edit(output[0]),) + tuple(output[1:])
        return edit(output)

    handle = hf.model.layers[layer].register_forward_hook(hook)
    try:
        seq = torch.tensor([list(prompt) + list(answer)])
        logp = torch.log_softmax(hf(seq).logits[0], -1)
    finally:
        handle.remove()
    return sum(logp[len(prompt) + i - 1, tok] for i, tok in enumerate(answer))
