"""Reward machinery: outcome scoring helpers, shaping wrappers, PRMs and advantage estimators."""
