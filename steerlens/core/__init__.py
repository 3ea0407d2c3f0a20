"""The floor: what every other wing stands on.

Errors and deprecations (``errors``, ``compat``), atomic umask-respecting files and safetensors
reading (``fileio``), hook names and model facts (``hooks``), model loading (``models``),
preference pairs and prompts (``data``), the shared datasets' layout (``datasets_layout``),
tokenised answers and their log-probabilities (``logprobs``), bootstrap intervals and verdicts
(``intervals``) and llama.cpp GGUF files (``gguf_file``).

May import: nothing of steerlens outside ``core``.
"""
