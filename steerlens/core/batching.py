"""How many rows go in one batch: length-sorted buckets under a token and a row budget, measured
per device kind.

Examples:
    >>> plan_batches([5, 3, 9, 4], 0, batch_size=2)
    [[1, 3], [0, 2]]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from steerlens.core.encoding import (  # noqa: F401
    EncodedPair,
    encode_pairs,
    encode_prompt,
    encode_text,
    end_of_turn_id,
    pad_rows,
    pair_rows,
)
from steerlens.core.errors import ConfigError


def length_buckets(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (less padding), in a stable order.

    Examples:
        >>> length_buckets([5, 1, 4, 2], 2)
        [[1, 3], [2, 0]]
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


#: Padded prompt-plus-answer tokens per batch on a CPU (see :func:`plan_batches`).
CPU_BATCH_TOKENS = 8192


#: Rows per batch on a CPU. Measured on 2 cores, SmolLM2-135M, 128 length-sorted prompts x 32
#: tokens (docs/performance.md): 4 rows 107 s, 8 61 s, 16 41 s, 32 35 s, 64 29.7 s, 128 29.9 s.
#: What made big batches slow before was padding (unsorted prompts), not rows.
CPU_MAX_ROWS = 64


#: Prompt-plus-answer tokens per batch on an accelerator, and rows per batch there.
GPU_BATCH_TOKENS = 32768


GPU_MAX_ROWS = 256


def plan_batches(
    lengths: Sequence[int],
    max_new_tokens: int,
    *,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
) -> list[list[int]]:
    """Row indices grouped into batches: sorted by length (little padding), at most
    ``batch_size`` rows (default: 64 on a CPU, 256 on an accelerator) and at most
    ``CPU_BATCH_TOKENS`` / ``GPU_BATCH_TOKENS`` padded tokens (prompt + answer) per batch.

    The CPU numbers are measured (see :data:`CPU_MAX_ROWS`): once rows are sorted by length,
    64-row batches cost the least per row on 2 cores; padding a short prompt to a long one's
    width costs as much as the long prompt, which is what made unsorted batches of 80 slow.

    Examples:
        >>> plan_batches([5, 50, 6, 49], 10, batch_size=2)
        [[0, 2], [3, 1]]
    """
    on_gpu = torch.device(device).type != "cpu"
    rows = batch_size if batch_size is not None else (GPU_MAX_ROWS if on_gpu else CPU_MAX_ROWS)
    budget = GPU_BATCH_TOKENS if on_gpu else CPU_BATCH_TOKENS
    if rows < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        width = lengths[i] + max_new_tokens  # sorted: the newest row is the widest
        if cur and (len(cur) >= rows or (len(cur) + 1) * width > budget):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches
