"""Applications: what a user runs, built on everything below it (the CLI, the evaluation harness,
reports, benchmarks, the demo). Nothing outside `turngym.apps` and `turngym.serve` imports from here."""
