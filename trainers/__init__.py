"""Trainers: rollout collection and policy/PRM optimization."""
