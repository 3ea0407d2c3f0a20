"""steerlens: steering vectors at TransformerLens hook points (BiPO, CAA, analysis, sweeps).

Examples:
    >>> import steerlens as sl
    >>> sorted(n for n in ("train_bipo", "caa_vector", "SteeringVector") if hasattr(sl, n))
    ['SteeringVector', 'caa_vector', 'train_bipo']
"""

from steerlens import analysis, interop, intervals, viz  # noqa: E402 - sub-packages used as sl.analysis
from steerlens.baselines import caa_vector, extract_vector, pca_vector
from steerlens.bipo import BiPOConfig, bipo_loss, train_bipo
from steerlens.compare import CoherenceBudget, Comparison, compare_methods
from steerlens.conditional import Condition, Conditional, search_condition
from steerlens.data import (
    DEFAULT_SYSTEM_PROMPT,
    PreferencePair,
    ab_pair,
    check_overlap,
    demo_data_path,
    format_prompt,
    load_pairs,
    load_prompts,
    split_pairs,
)
from steerlens.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    FileExistsSteerlensError,
    HookError,
    ModelLoadError,
    SteerlensError,
    TrainingDivergedError,
    VectorError,
    VectorFileError,
)
from steerlens.evaluate import (
    DEFAULT_MULTIPLIERS,
    GREEDY,
    Sampling,
    ab_score,
    generate,
    kl_divergence,
    preference_margin,
)
from steerlens.grid import Behaviour, Method, SweepError, sweep_grid
from steerlens.interventions import Ablate, Add, Cap, Intervention, ablation
from steerlens.judge import BehaviourJudge, SentenceEmbedder
from steerlens.models import ModelSpec, load_model, resid_hook, tiny_model
from steerlens.openended import BEHAVIOUR_PROMPTS, open_ended_score, prompting_score
from steerlens.reps import RePSConfig, reps_loss, train_reps
from steerlens.rows import RowSteering
from steerlens.sweep import score_vector, sweep_layers, sweep_multipliers, train_vector
from steerlens.transfer import ActivationMap, fit_map, transfer_vector
from steerlens.vector import SteeringVector, active_hooks, is_steered

__version__ = "0.1.0"

__all__ = [
    "ActivationMap",
    "fit_map",
    "transfer_vector",
    "Ablate",
    "Add",
    "Cap",
    "Condition",
    "Conditional",
    "Intervention",
    "ablation",
    "search_condition",
    "RowSteering",
    "RePSConfig",
    "reps_loss",
    "train_reps",
    "ModelSpec",
    "SweepError",
    "sweep_grid",
    "Behaviour",
    "Method",
    "CoherenceBudget",
    "Comparison",
    "compare_methods",
    "FileExistsSteerlensError",
    "analysis",
    "extract_vector",
    "interop",
    "intervals",
    "score_vector",
    "train_vector",
    "viz",
    "BEHAVIOUR_PROMPTS",
    "BehaviourJudge",
    "DEFAULT_MULTIPLIERS",
    "GREEDY",
    "Sampling",
    "SentenceEmbedder",
    "load_prompts",
    "open_ended_score",
    "prompting_score",
    "BiPOConfig",
    "CheckpointError",
    "ConfigError",
    "DEFAULT_SYSTEM_PROMPT",
    "DataError",
    "HookError",
    "ModelLoadError",
    "PreferencePair",
    "SteeringVector",
    "SteerlensError",
    "TrainingDivergedError",
    "VectorError",
    "VectorFileError",
    "ab_pair",
    "ab_score",
    "generate",
    "kl_divergence",
    "preference_margin",
    "sweep_layers",
    "sweep_multipliers",
    "active_hooks",
    "bipo_loss",
    "caa_vector",
    "check_overlap",
    "demo_data_path",
    "format_prompt",
    "is_steered",
    "load_model",
    "load_pairs",
    "pca_vector",
    "resid_hook",
    "split_pairs",
    "tiny_model",
    "train_bipo",
]
