"""Trainers: rollout collection and policy/PRM optimisation."""
