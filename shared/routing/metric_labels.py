"""Bounded Prometheus label values for goals and paths, which come from traffic."""

from __future__ import annotations

OTHER = "other"
MAX_GOALS = 50
MAX_PATHS_PER_GOAL = 20


class LabelCap:
    """The first ``max_goals`` goals and, per goal, the first ``max_paths`` paths keep their
    names; every later one is ``other``. At most ``(max_goals + 1) × (max_paths + 1)``
    label pairs, whatever the traffic."""

    def __init__(self, max_goals: int = MAX_GOALS, max_paths: int = MAX_PATHS_PER_GOAL) -> None:
        self._max_goals = max_goals
        self._max_paths = max_paths
        self._paths: dict[str, set[str]] = {}

    def pair(self, goal: str, path: str) -> tuple[str, str]:
        paths = self._paths.get(goal)
        if paths is None:
            if len(self._paths) >= self._max_goals:
                return OTHER, OTHER
            paths = self._paths[goal] = set()
        if path in paths:
            return goal, path
        if len(paths) >= self._max_paths:
            return goal, OTHER
        paths.add(path)
        return goal, path
