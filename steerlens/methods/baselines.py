"""Baseline steering vectors: CAA (mean difference) and PCA of paired differences.

CAA (Rimsky et al., 2024): for A/B items the prompt is followed by the answer letter, and the
block output (``hook_resid_post``) is read at the answer-letter token; the vector is the mean over
items of (matching - not matching). For free-text pairs the activation is the mean over the
answer tokens (``read="mean"``) or the last answer token (``read="last"``).

Letter balance: at the answer-letter token the activation mostly encodes WHICH letter was
written, and a plain mean over items keeps ``(share of A-matching - share of B-matching) x
(A - B)`` of it. ``balance_letters=True`` weights the A-matching and the B-matching items
equally, so the letter's identity cancels and only what differs with the behaviour is left. On
SmolLM2-135M this decides whether CAA's held-out A/B items separate at all
(docs/caa_letters.md).

Examples:
    >>> import steerlens as sl
    >>> model = sl.tiny_model(n_layers=3)
    >>> pairs = sl.load_pairs(sl.demo_data_path("ab"))
    >>> v = sl.caa_vector(model, pairs, layers=[1, 2])
    >>> v.hook_names
    ['blocks.1.hook_resid_post', 'blocks.2.hook_resid_post']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from steerlens.core.batching import plan_batches
from steerlens.core.compat import deprecated_args
from steerlens.core.data import DEFAULT_SYSTEM_PROMPT, PreferencePair
from steerlens.core.encoding import encode_prompt, encode_text, pad_rows
from steerlens.core.errors import ConfigError, DataError
from steerlens.core.hooks import check_hook_site, model_device, model_name, pad_token_id, resid_hook
from steerlens.steering.activations import read_activations
from steerlens.steering.vector import SteeringVector

Read = Literal["auto", "letter", "mean", "last"]


def letter_token_index(tokenizer: Any, answer_ids: Sequence[int], letter: str) -> int:
    """Index of the answer token that first contains the A/B letter."""
    for k in range(len(answer_ids)):
        if letter in tokenizer.decode(list(answer_ids[: k + 1])):
            return k
    return len(answer_ids) - 1


@deprecated_args(positional=("layers",))
def collect_activations(
    model: Any,
    pairs: Sequence[PreferencePair],
    *,
    layers: int | Sequence[int],
    read: Read = "auto",
    hook: str = "resid_post",
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    batch_size: int | None = None,
    progress: bool = True,
) -> dict[str, tuple[Float[Tensor, "n d_model"], Float[Tensor, "n d_model"]]]:
    """Residual activations of the matching and the non-matching completion of each pair.

    Args:
        layers: block index or indices (negative count from the end).
        read: ``"letter"`` (A/B letter token), ``"mean"`` (mean over answer tokens), ``"last"``
            (last answer token) or ``"auto"`` (letter for A/B pairs, mean otherwise).
        hook: ``"resid_post"`` (block output, the default everywhere), ``"resid_pre"`` or
            ``"resid_mid"``.

    Returns:
        ``{hook_name: (matching [n, d_model], not_matching [n, d_model])}`` in float32 on CPU.
    """
    if not pairs:
        raise DataError("need at least one pair to collect activations")
    if read not in ("auto", "letter", "mean", "last"):
        raise ConfigError(f"read must be auto/letter/mean/last, got {read!r}")
    layer_list = [layers] if isinstance(layers, int) else list(layers)
    hooks = [resid_hook(model, lyr, check_hook_site(hook)) for lyr in layer_list]
    stop = max(int(h.split(".")[1]) for h in hooks) + 1
    tok = model.tokenizer
    device = model_device(model)
    rows: list[tuple[list[int], list[int]]] = []
    spans: list[tuple[int, int]] = []  # (first, last) answer-token index to average, inclusive
    for p in pairs:
        prompt = encode_prompt(tok, p.question, system_prompt)
        for answer in (p.matching, p.not_matching):
            ans = encode_text(tok, answer)
            mode = read
            if mode == "auto":
                mode = "letter" if p.is_ab else "mean"
            if mode == "letter":
                letter = answer.strip().strip("()")[:1]
                if not p.is_ab:
                    raise DataError(f"read='letter' needs A/B answers, got {answer!r}")
                k = letter_token_index(tok, ans, letter)
                ans = ans[: k + 1]  # the prompt continues up to the letter, as in CAA
                span = (k, k)
            elif mode == "last":
                span = (len(ans) - 1, len(ans) - 1)
            else:
                span = (0, len(ans) - 1)
            rows.append((prompt, ans))
            spans.append((len(prompt) + span[0], len(prompt) + span[1]))
    pad = pad_token_id(model)
    n_rows = len(rows)
    out = {h: torch.zeros(n_rows, int(model.cfg.d_model)) for h in hooks}
    buckets = plan_batches([len(p) + len(a) for p, a in rows], 0, batch_size=batch_size,
                           device=model_device(model))  # fmt: skip
    with torch.no_grad():
        for idx in tqdm(buckets, desc="activations", disable=not progress, leave=False):
            ids, _ = pad_rows([rows[i] for i in idx], pad, device)
            cache = read_activations(model, ids, hooks, stop_at_layer=stop)
            for h in hooks:
                acts = cache[h].float()
                for j, i in enumerate(idx):
                    a, b = spans[i]
                    out[h][i] = acts[j, a : b + 1].mean(0).cpu()
    return {h: (t[0::2].clone(), t[1::2].clone()) for h, t in out.items()}


def matching_letter_is_first(pairs: Sequence[PreferencePair]) -> Tensor:
    """For A/B pairs: True where the matching answer is the first letter (``(A)``).

    Raises:
        DataError: a pair is not A/B, or all pairs match with the same letter (nothing to
            balance).

    Examples:
        >>> pairs = [PreferencePair("q", "(A)", "(B)"), PreferencePair("r", "(B)", "(A)")]
        >>> matching_letter_is_first(pairs).tolist()
        [True, False]
    """
    letters = []
    for i, p in enumerate(pairs):
        if p.matching_letter is None:
            raise DataError(f"pairs[{i}]: letter balance needs A/B answers, got {p.matching!r}")
        letters.append(p.matching_letter)
    first = min(letters)
    is_first = torch.tensor([x == first for x in letters])
    if bool(is_first.all()) or not bool(is_first.any()):
        raise DataError(
            f"letter balance needs items matching with each letter; all {len(pairs)} match "
            f"with ({letters[0]})"
        )
    return is_first


def balanced_mean(values: Tensor, groups: Tensor) -> Tensor:
    """Mean of the two group means (``groups`` is a boolean mask over the first dimension).

    Examples:
        >>> balanced_mean(torch.tensor([1.0, 3.0, 10.0]), torch.tensor([True, True, False]))
        tensor(6.)
    """
    return 0.5 * (values[groups].mean(0) + values[~groups].mean(0))


#: An aggregator turns the activations of the matching and the non-matching answers
#: (``[n, d_model]`` each) into one direction, as in steering-vectors' aggregators.
Aggregator = Callable[[Tensor, Tensor], Tensor]


def mean_aggregator() -> Aggregator:
    """CAA: the mean of the paired differences.

    Examples:
        >>> mean_aggregator()(torch.tensor([[2.0], [4.0]]), torch.tensor([[1.0], [1.0]]))
        tensor([2.])
    """

    def aggregate(matching: Tensor, not_matching: Tensor) -> Tensor:
        return (matching - not_matching).mean(0)

    return aggregate


def balanced_aggregator(groups: Tensor) -> Aggregator:
    """Letter-balanced CAA: the mean of the two groups' mean differences (``groups`` marks the
    items whose matching answer is the first letter).

    Examples:
        >>> agg = balanced_aggregator(torch.tensor([True, True, False]))
        >>> agg(torch.tensor([[1.0], [3.0], [10.0]]), torch.zeros(3, 1))
        tensor([6.])
    """

    def aggregate(matching: Tensor, not_matching: Tensor) -> Tensor:
        return balanced_mean(matching - not_matching, groups)

    return aggregate


def pca_aggregator(
    *, center: bool = False, scale: Literal["projection", "unit"] = "projection"
) -> Aggregator:
    """PCA of the paired differences: the top direction (see :func:`top_direction`), scaled
    by the differences' mean projection or kept at norm 1.

    Examples:
        >>> agg = pca_aggregator(scale="unit")
        >>> agg(torch.tensor([[3.0, 0.1], [2.0, -0.1]]), torch.zeros(2, 2)).round(decimals=1)
        tensor([1., 0.])
    """
    if scale not in ("projection", "unit"):
        raise ConfigError(f"scale must be 'projection' or 'unit', got {scale!r}")

    def aggregate(matching: Tensor, not_matching: Tensor) -> Tensor:
        diffs = (matching - not_matching).double()
        if diffs.shape[0] < 2:
            raise DataError("pca_vector needs at least 2 pairs")
        pc, _ = top_direction(diffs, center=center)
        vec = pc * (diffs @ pc).mean() if scale == "projection" else pc
        return vec.float()

    return aggregate


@deprecated_args(positional=("layers", "aggregator"))
def extract_vector(
    model: Any,
    pairs: Sequence[PreferencePair],
    *,
    layers: int | Sequence[int],
    aggregator: Aggregator,
    read: Read = "auto",
    hook: str = "resid_post",
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    batch_size: int | None = None,
    progress: bool = True,
    behaviour: str | None = None,
    method: str = "custom",
    **metadata: Any,
) -> SteeringVector:
    """One activation extraction (:func:`collect_activations`), then ``aggregator`` per hook.

    :func:`caa_vector` and :func:`pca_vector` are this with :func:`mean_aggregator` (or
    :func:`balanced_aggregator`) and :func:`pca_aggregator`; pass any callable
    ``(matching [n, d], not_matching [n, d]) -> [d]`` for another rule.

    Examples:
        >>> import steerlens as sl
        >>> m = sl.tiny_model(n_layers=2)
        >>> pairs = sl.load_pairs(sl.demo_data_path("train"))[:4]
        >>> last = lambda pos, neg: pos[-1] - neg[-1]          # a custom aggregator
        >>> extract_vector(m, pairs, layers=1, aggregator=last, progress=False).d_model
        64
    """
    acts = collect_activations(
        model, pairs, layers=layers, read=read, hook=hook, system_prompt=system_prompt,
        batch_size=batch_size, progress=progress,
    )  # fmt: skip
    vectors = {h: aggregator(m, n) for h, (m, n) in acts.items()}
    meta = {
        "method": method,
        "model": model_name(model),
        "d_model": int(model.cfg.d_model),
        "n_layers": int(model.cfg.n_layers),
        "behaviour": behaviour,
        "layers": [int(h.split(".")[1]) for h in vectors],
        "hook": hook,
        "read": read,
        "n_pairs": len(pairs),
        **metadata,
    }
    return SteeringVector(vectors, meta)


@deprecated_args(positional=("layers",))
def caa_vector(
    model: Any,
    pairs: Sequence[PreferencePair],
    *,
    balance_letters: bool = False,
    layers: int | Sequence[int],
    read: Read = "auto",
    hook: str = "resid_post",
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    batch_size: int | None = None,
    behaviour: str | None = None,
    progress: bool = True,
) -> SteeringVector:
    """Contrastive Activation Addition: mean over items of (matching - not matching).

    Args:
        layers: block index or list of indices (negative count from the end).
        read: where to read activations (see :func:`collect_activations`).
        balance_letters: for A/B items, weight the items whose matching answer is (A) and those
            whose matching answer is (B) equally (the mean of the two groups' mean differences),
            so that the answer letter's identity cancels. The paper's plain mean is the default.

    The forward pass stops after the last needed block (``stop_at_layer``).

    Examples:
        >>> import steerlens as sl
        >>> m = sl.tiny_model(n_layers=2)
        >>> v = caa_vector(m, sl.load_pairs(sl.demo_data_path("ab"))[:4], layers=1)
        >>> v.metadata["method"], v.d_model
        ('caa', 64)
    """
    groups = matching_letter_is_first(pairs) if balance_letters else None
    aggregator = mean_aggregator() if groups is None else balanced_aggregator(groups)
    return extract_vector(
        model, pairs, layers=layers, aggregator=aggregator, read=read, hook=hook,
        system_prompt=system_prompt, batch_size=batch_size, progress=progress,
        behaviour=behaviour, method="caa", balance_letters=balance_letters,
    )  # fmt: skip


@deprecated_args(positional=("layers",))
def pca_vector(
    model: Any,
    pairs: Sequence[PreferencePair],
    *,
    center: bool = False,
    scale: Literal["projection", "unit"] = "projection",
    layers: int | Sequence[int],
    read: Read = "auto",
    hook: str = "resid_post",
    behaviour: str | None = None,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    batch_size: int | None = None,
    progress: bool = True,
) -> SteeringVector:
    """Top principal direction of the paired differences (matching - not matching).

    By default the direction is the top right singular vector of the *uncentred* differences
    (the direction that best explains the differences themselves, mean included), as in Im &
    Li's PCA-of-differences and Representation Engineering's reading vectors. ``center=True``
    subtracts the mean difference first, which is repeng's ``pca_diff`` (``sklearn.PCA`` on the
    differences, vgel/repeng ``extract.py``): it finds the direction along which the
    differences *vary* most, and so drops the mean difference CAA uses. The sign is set so that
    the mean projection of the differences is positive.

    With ``scale="projection"`` the unit direction is scaled by the mean projection of the
    differences (a size comparable with CAA); ``"unit"`` keeps it at norm 1.

    Examples:
        >>> import steerlens as sl
        >>> m = sl.tiny_model(n_layers=2)
        >>> v = pca_vector(m, sl.load_pairs(sl.demo_data_path("train"))[:4], layers=1, scale="unit")
        >>> round(v.norms()["blocks.1.hook_resid_post"], 4)
        1.0
    """
    aggregator = pca_aggregator(center=center, scale=scale)
    return extract_vector(
        model, pairs, layers=layers, aggregator=aggregator, read=read, hook=hook,
        system_prompt=system_prompt, batch_size=batch_size, progress=progress,
        behaviour=behaviour, method="pca", center=center, scale=scale,
    )  # fmt: skip


def top_direction(
    diffs: Float[Tensor, "n d_model"], *, center: bool = False
) -> tuple[Tensor, float]:
    """Unit top right singular vector of ``diffs`` (centred first if ``center``), sign-aligned
    with the mean of ``diffs``, and the share of the (centred or raw) sum of squares it explains.

    Examples:
        >>> d = torch.tensor([[2.0, 0.1], [3.0, -0.1], [2.5, 0.0]])
        >>> pc, share = top_direction(d)
        >>> [round(x, 1) for x in pc.tolist()], share > 0.99
        ([1.0, -0.0], True)
    """
    x = diffs.double()
    if center:
        x = x - x.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    pc = vh[0]
    if float(diffs.double().mean(0) @ pc) < 0:
        pc = -pc
    total = float((s**2).sum())
    return pc, float(s[0] ** 2 / total) if total > 0 else 0.0
