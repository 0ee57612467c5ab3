"""The run log: one JSON line per finished run, so an interrupted study resumes where it stopped."""

from __future__ import annotations

import json
from pathlib import Path

#: The fields that identify a run across re-runs (absent ones count as None).
KEY_FIELDS = ("table", "fold", "arm", "labels", "seed", "steps")


class Results:
    """Finished runs, one JSON line each in a file; a run's key identifies it across re-runs.

    Every row is appended (and flushed) as soon as its run finishes, so a study cut short
    keeps everything it finished.
    """

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict] = []
        if path.is_file():
            self.rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    @staticmethod
    def key(row: dict) -> str:
        return json.dumps({k: row.get(k) for k in KEY_FIELDS}, sort_keys=True)

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


def unit_scores(results: Results, table: str, arm: str, labels: str, metric: str) -> dict[tuple[str, int], float]:
    """``{(test volume, seed): score}`` of one arm at one label budget (its name)."""
    scores = {}
    for row in results.select(table=table, arm=arm, labels=labels):
        for volume, metrics in row["per_volume"].items():
            scores[(volume, row["seed"])] = metrics[metric]
    return scores
