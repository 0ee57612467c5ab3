"""The run log: one JSON line per finished run, so an interrupted study resumes where it stopped."""

from __future__ import annotations

import json
from pathlib import Path


class Results:
    """Finished runs, one JSON line each in a file; a run's key identifies it across re-runs."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict] = []
        if path.is_file():
            self.rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    @staticmethod
    def key(row: dict) -> str:
        return json.dumps({k: row[k] for k in ("table", "fold", "arm", "fraction", "seed")}, sort_keys=True)

    def has(self, **key) -> bool:
        wanted = self.key(key)
        return any(self.key(r) == wanted for r in self.rows)

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def select(self, **match) -> list[dict]:
        return [r for r in self.rows if all(r.get(k) == v for k, v in match.items())]


def unit_scores(results: Results, table: str, arm: str, fraction: float, metric: str) -> dict[tuple[str, int], float]:
    """``{(test volume, seed): score}`` of one arm: the unit of the tables and the paired tests."""
    scores = {}
    for row in results.select(table=table, arm=arm, fraction=fraction):
        for volume, metrics in row["per_volume"].items():
            scores[(volume, row["seed"])] = metrics[metric]
    return scores
