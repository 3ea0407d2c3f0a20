"""steerlens: steering vectors at TransformerLens hook points (BiPO, CAA, analysis, sweeps).

Examples:
    >>> import steerlens as sl
    >>> sorted(n for n in ("train_bipo", "caa_vector", "SteeringVector") if hasattr(sl, n))
    ['SteeringVector', 'caa_vector', 'train_bipo']
"""

from steerlens import analysis, interop
from steerlens.analysis import viz
from steerlens.core import intervals
from steerlens.core.behaviours import behaviour_files, load_behaviour
from steerlens.core.data import (
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
from steerlens.core.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    FileExistsSteerlensError,
    HookError,
    ModelLoadError,
    SteerlensError,
    SweepError,
    TrainingDivergedError,
    VectorError,
    VectorFileError,
)
from steerlens.core.models import ModelSpec, load_model, resid_hook, tiny_model
from steerlens.evaluation.agreement import (
    export_for_labelling,
    judge_agreement,
    load_labels,
    read_labels,
)
from steerlens.evaluation.generation import GREEDY, Sampling, generate
from steerlens.evaluation.judge import BehaviourJudge, SentenceEmbedder
from steerlens.evaluation.metrics import ab_score, kl_divergence, preference_margin
from steerlens.evaluation.openended import BEHAVIOUR_PROMPTS, open_ended_score, prompting_score
from steerlens.evaluation.rubric import RubricJudge
from steerlens.evaluation.scoring import DEFAULT_MULTIPLIERS
from steerlens.experiments.compare import Comparison, compare_methods
from steerlens.experiments.grid import sweep_grid
from steerlens.experiments.sweep import score_vector, sweep_layers, sweep_multipliers
from steerlens.experiments.verdicts import CoherenceBudget
from steerlens.experiments.vocabulary import Behaviour, Method
from steerlens.interop.transfer import ActivationMap, fit_map, transfer_vector
from steerlens.methods.baselines import caa_vector, extract_vector, pca_vector
from steerlens.methods.bipo import train_bipo
from steerlens.methods.bipo_config import BiPOConfig
from steerlens.methods.objective import bipo_loss
from steerlens.methods.registry import MethodKind, method_names, register_method
from steerlens.methods.reps import RePSConfig, reps_loss, train_reps
from steerlens.methods.train import train_vector
from steerlens.steering.conditional import Condition, Conditional, search_condition
from steerlens.steering.hookpoints import active_hooks, is_steered
from steerlens.steering.interventions import Ablate, Add, Cap, Intervention, ablation
from steerlens.steering.protocol import Steering
from steerlens.steering.rows import RowSteering
from steerlens.steering.vector import SteeringVector

__version__ = "0.1.0"

__all__ = [
    # data and models
    "load_model",
    "tiny_model",
    "ModelSpec",
    "resid_hook",
    "PreferencePair",
    "load_pairs",
    "load_prompts",
    "load_behaviour",
    "behaviour_files",
    "split_pairs",
    "check_overlap",
    "demo_data_path",
    "ab_pair",
    "format_prompt",
    "DEFAULT_SYSTEM_PROMPT",
    # steering
    "SteeringVector",
    "RowSteering",
    "Steering",
    "Intervention",
    "Add",
    "Ablate",
    "Cap",
    "ablation",
    "Condition",
    "Conditional",
    "search_condition",
    "active_hooks",
    "is_steered",
    # methods
    "train_vector",
    "method_names",
    "register_method",
    "MethodKind",
    "BiPOConfig",
    "train_bipo",
    "bipo_loss",
    "RePSConfig",
    "train_reps",
    "reps_loss",
    "caa_vector",
    "pca_vector",
    "extract_vector",
    # evaluation
    "DEFAULT_MULTIPLIERS",
    "ab_score",
    "preference_margin",
    "kl_divergence",
    "generate",
    "Sampling",
    "GREEDY",
    "open_ended_score",
    "prompting_score",
    "BEHAVIOUR_PROMPTS",
    "BehaviourJudge",
    "SentenceEmbedder",
    "RubricJudge",
    "judge_agreement",
    "load_labels",
    "export_for_labelling",
    "read_labels",
    # experiments
    "sweep_grid",
    "Behaviour",
    "Method",
    "score_vector",
    "sweep_layers",
    "sweep_multipliers",
    "compare_methods",
    "Comparison",
    "CoherenceBudget",
    # interop and transfer
    "interop",
    "fit_map",
    "transfer_vector",
    "ActivationMap",
    # analysis
    "analysis",
    "viz",
    "intervals",
    # errors
    "SteerlensError",
    "ConfigError",
    "DataError",
    "HookError",
    "ModelLoadError",
    "VectorError",
    "VectorFileError",
    "FileExistsSteerlensError",
    "CheckpointError",
    "TrainingDivergedError",
    "SweepError",
]
