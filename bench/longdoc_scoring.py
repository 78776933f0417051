"""LongDocVQA scoring against MMLongBench-Doc's own eval_score, on perturbed answers of its real questions.

    .venv/bin/python bench/longdoc_scoring.py --reference PATH/TO/MMLongBench-Doc

PATH is a local checkout of https://github.com/mayubo2333/MMLongBench-Doc (not shipped with turngym):
its eval/eval_score.py is loaded on its own (the package's other modules need openai) and its
data/samples.json gives the questions. Every gt gets a few dozen predictions an answer extractor could
plausibly return (the gt itself, case, whitespace, quotes, parentheses, punctuation, truncation, typos,
units and percent signs, number formats, list order, quoting and padding, declines), and each is scored
by both. A case agrees when the two scores are within 1e-6. Where eval_score raises, its run script's
fallback score of 0 is the reference (counted in the "raised" column).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.util
import io
import json
import random
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from turngym.envs.longdoc.scoring import FORMATS, score_answer

TOLERANCE = 1e-6
DECLINES = ["Not answerable", "not answerable.", "Unanswerable", "N/A", "None", "",
            "The document does not mention it"]


def load_reference(root: Path) -> tuple[Callable[[Any, Any, str], float], list[dict[str, Any]]]:
    """The reference's eval_score and its samples, or a SystemExit that says what is missing."""
    module_path = root / "eval" / "eval_score.py"
    samples_path = next((p for p in (root / "data" / "samples.json", root / "samples.json") if p.is_file()), None)
    if not module_path.is_file() or samples_path is None:
        raise SystemExit(f"{root} is not an MMLongBench-Doc checkout (no eval/eval_score.py or data/samples.json): "
                         "clone https://github.com/mayubo2333/MMLongBench-Doc and pass its folder as --reference.")
    spec = importlib.util.spec_from_file_location("mmlongbench_eval_score", module_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.eval_score, json.loads(samples_path.read_text())


def reference_score(eval_score: Callable[[Any, Any, str], float], gt: Any, pred: Any, fmt: str) -> tuple[float, bool]:
    """The reference's score and whether it raised (then 0, its run script's fallback). Its list rule prints."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return float(eval_score(gt, pred, fmt)), False
    except Exception:  # eval() of a prediction can raise anything; the reference's run script then scores 0
        return 0.0, True


# ---- perturbations ----------------------------------------------------------------------------------
def text_variants(text: str, rng: random.Random) -> Iterator[str]:
    """What an extractor does to a short string answer."""
    yield from (text, text.upper(), text.lower(), text.title(), f"  {text}  ", text.replace(" ", "  "),
                f"{text}.", f'"{text}"', f"'{text}'", f"({text})", f"{text} (approx.)", f"The answer is {text}",
                f"{text}%", f"${text}", text.replace(" ", ""), text.replace("-", " "))
    if len(text) >= 4:
        yield from (text[: len(text) * 3 // 4], text[: len(text) // 2], text[:-1], text[1:])
        i = rng.randrange(1, len(text) - 1)
        yield from (text[:i] + "x" + text[i + 1:], text[:i] + text[i + 1:], text[:i] + "e" + text[i:])


def number_variants(text: str, rng: random.Random) -> Iterator[str]:
    """Number formats, units and near misses of a numeric answer."""
    bare = text.strip().rstrip("%").lstrip("$").replace(",", "")
    try:
        value = float(bare)
    except ValueError:
        return
    decimals = len(bare.partition(".")[2])
    yield from (bare, f"{bare}%", f"${bare}", f"{value:,.{decimals}f}", f"{value:.{decimals + 1}f}", f"{value:g}",
                f"{value:.0f}", f"{value:.1f}", f"{value:.2f}", f"{value / 100:g}", f"{value * 100:g}",
                f"{value * 1.005:g}", f"{value * 1.02:g}", f"{value + 1:g}", f"{value - 0.5:g}", f"{value:e}",
                f"{bare} million", f"about {bare}", f"-{bare}", f"{value + rng.choice([0.3, 0.7]):g}")


def list_variants(gt: str, rng: random.Random) -> Iterator[str]:
    """List orders, quoting, padding, joins and near misses of a list answer."""
    try:
        items = ast.literal_eval(gt)
    except (ValueError, SyntaxError):
        return
    if not isinstance(items, list):
        return
    strings = [str(item) for item in items]
    shuffled = items[:]
    rng.shuffle(shuffled)
    yield from (gt, str(items[::-1]), str(shuffled), json.dumps(items), f" {gt}", f"{gt} ", gt.replace(", ", ","),
                ", ".join(strings), " and ".join(strings), "; ".join(strings), str([s.upper() for s in strings]),
                str([s.lower() for s in strings]), str([f" {s} " for s in strings]), str(strings),
                str([s.rstrip("%") for s in strings]), str([f"{s}%" for s in strings]), f"[{', '.join(strings)}]",
                str(items[:-1]), str([*items, *items[:1]]), "[]")
    if items:
        k = rng.randrange(len(items))
        for variant in text_variants(strings[k], rng):
            yield str([*strings[:k], variant, *strings[k + 1:]])


def predictions(gt: str, fmt: str, rng: random.Random) -> list[str]:
    """The perturbed predictions of one gt, without repeats."""
    out = [*text_variants(gt, rng), *DECLINES]
    if fmt in ("Int", "Float", "Str"):
        out += number_variants(gt, rng)
    if fmt == "List":
        out += list_variants(gt, rng)
    return list(dict.fromkeys(out))


# ---- the comparison ---------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="a local MMLongBench-Doc checkout")
    parser.add_argument("--seed", type=int, default=0, help="seeds the typo positions and list shuffles")
    parser.add_argument("--show", type=int, default=10, help="disagreements of the default scoring to print")
    args = parser.parse_args()
    eval_score, samples = load_reference(args.reference)
    rng = random.Random(args.seed)
    tally: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    misses: list[tuple[str, str, str, float, float]] = []
    for sample in samples:
        gt, fmt = sample["answer"], sample["answer_format"]
        for pred in predictions(gt, fmt, rng):
            expected, raised = reference_score(eval_score, gt, pred, fmt)
            ours, lenient = score_answer(gt, pred, fmt), score_answer(gt, pred, fmt, scoring="lenient")
            for key in (fmt, "all"):
                row = tally[key]
                row["cases"] += 1
                row["raised"] += raised
                row["agree"] += abs(ours - expected) <= TOLERANCE
                row["lenient"] += abs(lenient - expected) <= TOLERANCE
                row["max_diff"] = max(row["max_diff"], abs(ours - expected))
                if 0.0 < expected < 1.0:  # a fractional ANLS, the values the issue saw differ in the 3rd decimal
                    row["anls"] += 1
                    row["anls_diff"] = max(row["anls_diff"], abs(ours - expected))
            if abs(ours - expected) > TOLERANCE:
                misses.append((fmt, gt, pred, ours, expected))

    table = Table(title=f"score_answer vs MMLongBench-Doc eval_score: {len(samples)} questions, perturbed answers")
    for column in ("format", "cases", "raised", "mmlongbench agree", "max |diff|", "ANLS cases",
                   "max ANLS |diff|", "lenient agree"):
        table.add_column(column, justify="right")
    for key in (*[f for f in FORMATS if f in tally], "all"):
        row = tally[key]
        table.add_row(key, f"{row['cases']:.0f}", f"{row['raised']:.0f}", f"{row['agree'] / row['cases']:.2%}",
                      f"{row['max_diff']:.2g}", f"{row['anls']:.0f}", f"{row['anls_diff']:.2g}",
                      f"{row['lenient'] / row['cases']:.1%}")
    console = Console(width=max(Console().width, 110))
    console.print(table)
    for fmt, gt, pred, ours, expected in misses[: args.show]:
        console.print(f"differs: {fmt} gt={gt!r} pred={pred!r} ours={ours:.6f} reference={expected:.6f}",
                      markup=False)


if __name__ == "__main__":
    main()
