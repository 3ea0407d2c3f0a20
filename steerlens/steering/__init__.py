"""Steering: what is added to (or done at) a hook point while the model runs.

The hook machinery (``hookpoints``: positional hooks, call tracking, ``steer_with``), the
:class:`~steerlens.steering.vector.SteeringVector` value, per-row steering (``rows``),
interventions (ablation, caps: ``interventions``), conditional steering (``conditional``), the
module tree under the bridge (``native``), the one activations reader (``activations``) and the
:class:`~steerlens.steering.protocol.Steering` protocol every steering object satisfies.

May import: ``core``.
"""
