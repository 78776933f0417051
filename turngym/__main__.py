"""`python -m turngym ...` is the `turngym` command."""

from turngym.apps.cli import app

app(prog_name="turngym")
