"""Checked-in data: rules, sprites, frozen task manifests (read with importlib.resources)."""
