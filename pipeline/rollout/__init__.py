"""Rollout: a pure state machine (`machine.py`, `plan.py`) that decides, driven by a host edge
(`host.py`: a target from `pipeline.targets` plus TF Serving's gRPC ModelService) that acts."""
