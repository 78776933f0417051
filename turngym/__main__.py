"""`python -m turngym ...` is the `turngym` command."""

from turngym.cli import app

app(prog_name="turngym")
