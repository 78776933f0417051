"""A document's world, drawn before anything is written so every stage reads the same facts.

Quantities are drawn lazily, the first time the writer asks for one, which keeps the draw order (and so
the output) tied to the order the document is laid out in.
"""

from __future__ import annotations

from typing import Any

from turngym.envs.draw import Draw
from turngym.envs.longdoc.facts import Pending, cap, format_value, slug
from turngym.envs.longdoc.vocab import vocabulary


class World:
    """The document's fact base: who, what, where and the quantities, drawn once and consistent."""

    def __init__(self, d: Draw, kind: str, pages: int) -> None:
        world = vocabulary()["world"]
        self.d, self.kind, self.spec = d, kind, world["doc_types"][kind]
        spec = self.spec
        self.year = d.between(2016, 2025)
        self.org = d.pick(spec["orgs"]).format(word=d.pick(world["org_words"]))
        self.field = d.pick(spec["fields"])
        self.title = cap(d.pick(spec["titles"]).format(field=self.field, org=self.org, year=self.year))
        self.date = f"{d.between(1, 28)} {d.pick(world['months'])} {self.year}"
        cities = d.shuffled(world["cities"])
        pool = d.shuffled(list(cities) if spec["items"] == "cities" else list(spec["items"]))
        n_items = min(6 + pages // 15, len(pool) - 4)
        self.items, self.absent_items = pool[:n_items], pool[n_items:]
        others = [c for c in cities if c not in self.items]
        self.hq, self.bases = others[0], others[1:]
        if spec["periods"] == "years":
            n = 5 + pages // 50
            self.periods = [str(y) for y in range(self.year - n, self.year)]
            self.absent_periods = [str(y) for y in range(self.year - 40, self.year - n - 10)]
        else:
            periods = d.shuffled(list(spec["periods"]))
            n = min(5 + pages // 50, len(periods) - 3)
            self.periods, self.absent_periods = periods[:n], periods[n:]
        names = [f"{f} {last}" for f in world["first_names"] for last in world["last_names"]]
        picked: list[str] = []
        while len(picked) < len(spec["roles"]) + 8:
            name = d.pick(names)
            if all(name.split()[0] != p.split()[0] and name.split()[1] != p.split()[1] for p in picked):
                picked.append(name)
        self.people = dict(zip(spec["roles"], picked, strict=False))
        self.absent_people = picked[len(spec["roles"]):]
        self.base = {name: d.pick(self.bases) for name in self.people.values()}
        self.founded = d.between(1950, 1999)
        pie = spec["pie"]
        self.pie_items = d.sample(pie["items"], d.between(4, len(pie["items"])))
        self.values: dict[str, Any] = {}
        self.meta: dict[str, tuple[str, str, str]] = {}  # metric key -> (metric, item, period)
        self.placed: set[str] = set()

    def the(self, item: str) -> str:
        return self.spec["item"].format(item=item)

    def when(self, period: str) -> str:
        return self.spec["when"].format(period=period)

    def metric_spec(self, metric: str) -> dict[str, Any]:
        pie = self.spec["pie"]
        if metric == pie["key"]:
            return {"label": pie["label"], "header": "Share (%)", "what": pie["what"], "unit": "", "format": "pct",
                    "additive": False, "noun": pie["noun"], "nouns": pie["nouns"], "pie": True}
        return {"noun": self.spec["noun"], "nouns": self.spec["nouns"], "pie": False, **self.spec["metrics"][metric]}

    def what(self, metric: str, item: str) -> str:
        s = self.metric_spec(metric)
        return s["what"].format(item=item if s["pie"] else self.the(item))

    def metric(self, metric: str, item: str, period: str) -> Pending:
        key = f"{metric}_{slug(item)}_{slug(period)}"
        if key not in self.values:
            s = self.metric_spec(metric)
            if s["pie"]:
                self._pie_shares(period)
            else:
                low, high = s["range"]
                v = self.d.uniform(low, high)
                self.values[key] = round(v) if s["format"] == "int" else round(v, 1)
            self.meta[key] = (metric, item, period)
        return Pending(key, self.values[key], format_value(self.values[key], self.metric_spec(metric)["format"]), "")

    def _pie_shares(self, period: str) -> None:
        weights = [self.d.uniform(1, 6) for _ in self.pie_items]
        shares = [round(100 * w / sum(weights), 1) for w in weights]
        shares[-1] = round(100 - sum(shares[:-1]), 1)
        for item, share in zip(self.pie_items, shares, strict=True):
            key = f"{self.spec['pie']['key']}_{slug(item)}_{slug(period)}"
            self.values[key] = share
            self.meta[key] = (self.spec["pie"]["key"], item, period)

    def free(self, metric: str, item: str, period: str) -> bool:
        return f"{metric}_{slug(item)}_{slug(period)}" not in self.placed

    def since(self, item: str) -> Pending:
        key = f"since_{slug(item)}"
        if key not in self.values:
            self.values[key] = self.d.between(self.year - 35, self.year - 12)
        return Pending(key, self.values[key], str(self.values[key]), "")
