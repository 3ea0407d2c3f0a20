"""Tokenising prompts and answers for scoring: the chat-formatted prompt, answers tokenised on
their own (an end-of-turn token appended), and right-padded rows.

Examples:
    >>> import steerlens as sl
    >>> tok = sl.tiny_model(n_layers=1).tokenizer
    >>> enc = encode_pairs(tok, [sl.PreferencePair("Want power?", "Yes.", "No.")])
    >>> enc[0].matching[-1] == end_of_turn_id(tok)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from steerlens.core.data import DEFAULT_SYSTEM_PROMPT, PreferencePair, format_prompt


@dataclass(frozen=True)
class EncodedPair:
    """Token ids of one pair: the shared prompt and the two answers (each ending in EOS)."""

    prompt: tuple[int, ...]
    matching: tuple[int, ...]
    not_matching: tuple[int, ...]

    @property
    def length(self) -> int:
        return len(self.prompt) + max(len(self.matching), len(self.not_matching))

    @property
    def packed_length(self) -> int:
        """Tokens of the packed row ``[prompt, matching, not_matching]`` (:func:`pack_pairs`)."""
        return len(self.prompt) + len(self.matching) + len(self.not_matching)


def end_of_turn_id(tokenizer: Any) -> int:
    """The token that ends an assistant turn (``<|im_end|>``, ``</s>``, ``<|eot_id|>``, ...)."""
    for tok in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>"):
        ids = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(ids, int) and ids != tokenizer.unk_token_id and ids is not None:
            return ids
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token to end answers with")
    return int(tokenizer.eos_token_id)


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens added."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_prompt(
    tokenizer: Any, question: str, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
) -> list[int]:
    """Token ids of the chat-formatted prompt for ``question``."""
    return encode_text(tokenizer, format_prompt(tokenizer, question, system_prompt))


def encode_pairs(
    tokenizer: Any,
    pairs: Sequence[PreferencePair],
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    append_eos: bool = True,
) -> list[EncodedPair]:
    """Tokenise pairs: prompt ids plus each answer's ids (and the end-of-turn token)."""
    eos = [end_of_turn_id(tokenizer)] if append_eos else []
    out = []
    for p in pairs:
        out.append(
            EncodedPair(
                tuple(encode_prompt(tokenizer, p.question, system_prompt)),
                tuple(encode_text(tokenizer, p.matching) + eos),
                tuple(encode_text(tokenizer, p.not_matching) + eos),
            )
        )
    return out


def pad_rows(
    rows: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int, device: Any = "cpu"
) -> tuple[Int[Tensor, "rows pos"], Bool[Tensor, "rows pos"]]:
    """Right-pad (prompt, answer) rows; the mask is True at answer tokens.

    Examples:
        >>> ids, mask = pad_rows([([1, 2], [3]), ([4], [5, 6])], pad_id=0)
        >>> ids.tolist(), mask.int().tolist()
        ([[1, 2, 3], [4, 5, 6]], [[0, 0, 1], [0, 1, 1]])
    """
    width = max(len(p) + len(a) for p, a in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (p, a) in enumerate(rows):
        seq = list(p) + list(a)
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, len(p) : len(seq)] = True
    return ids.to(device), mask.to(device)


def pair_rows(
    batch: Sequence[EncodedPair], pad_id: int, device: Any = "cpu"
) -> tuple[Int[Tensor, "rows pos"], Bool[Tensor, "rows pos"]]:
    """Rows ``[matching_1..B, not_matching_1..B]`` for a batch of encoded pairs."""
    rows = [(e.prompt, e.matching) for e in batch] + [(e.prompt, e.not_matching) for e in batch]
    return pad_rows(rows, pad_id, device)
