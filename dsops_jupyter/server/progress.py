"""One monotone progress fraction per job, weighted by how long each stage took before.

A package job's stages differ wildly in length (converting takes a second, building an image a
minute), so equal shares per stage made the bar jump to 91 % and sit there through a build. Here
each stage of the job's plan (``options.stage_plan()``, the stage keys the core will announce)
weighs its expected seconds: what that stage of the same job kind took before (StageTimes, a
small JSON file beside the job store), or a fixed first-time estimate. Inside a stage the core's
own fraction counts (a build's "step k of n"); without one, the share creeps on with elapsed
time towards, never to, the stage's end, so the bar never stands still on a long stage.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dsops_jupyter.fsutil import atomic_write

log = logging.getLogger(__name__)

#: First-time estimates (seconds) per stage key, before any job of that kind timed the stage.
ESTIMATES: dict[str, float] = {
    "Converting": 1.0,
    "Committing": 1.0,
    "Building": 40.0,
    "Smoke": 10.0,
    "Pushing": 20.0,
    "Exporting": 2.0,
    "Running": 10.0,
}
#: A stage key without an estimate (a stage added after this table).
DEFAULT_ESTIMATE = 5.0
#: How far the elapsed time alone moves a stage (its core fraction moves it the rest).
CREEP_LIMIT = 0.95
#: Below 1 until the job has succeeded: only the outcome says "done".
CEILING = 0.99
#: Weight of a new measurement against what was known (an exponential moving average).
LEARNING_RATE = 0.5
STAGE_TIMES_FILE = "stage-times.json"


def stage_key(message: str) -> str:
    """A stage's key: the first word of its message ("Building image wine:v3" -> "Building")."""
    words = message.split()
    return words[0].strip(":.,") if words else ""


class StageTimes:
    """Seconds each stage of each job kind took, learned from finished jobs.

    Kept in one JSON file (``{"package": {"Building": 61.2, ...}, "run": {...}}``), written
    atomically; a missing or broken file means first-time estimates, never an error.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._times = self._load()

    def estimate(self, kind: str, key: str) -> float:
        with self._lock:
            known = self._times.get(kind, {}).get(key)
        return known if known is not None else ESTIMATES.get(key, DEFAULT_ESTIMATE)

    def learn(self, kind: str, stages: Sequence[dict[str, Any]]) -> None:
        """Fold the durations of ``stages`` (``{"name", "duration"}``, finished ones) in."""
        with self._lock:
            times = self._times.setdefault(kind, {})
            for stage in stages:
                key, seconds = stage_key(str(stage.get("name", ""))), stage.get("duration")
                if not key or not isinstance(seconds, int | float) or seconds < 0:
                    continue
                old = times.get(key)
                times[key] = seconds if old is None else old + LEARNING_RATE * (seconds - old)
            self._save()

    def _load(self) -> dict[str, dict[str, float]]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, RecursionError) as err:
            log.warning("dsops: ignoring unreadable stage times %s: %s", self.path, err)
            return {}
        if not isinstance(data, dict):
            return {}
        return {
            str(kind): {
                str(key): float(seconds)
                for key, seconds in times.items()
                if isinstance(seconds, int | float) and math.isfinite(seconds) and seconds >= 0
            }
            for kind, times in data.items()
            if isinstance(times, dict)
        }

    def _save(self) -> None:
        if self.path is None:
            return
        data = json.dumps(self._times, indent=1, sort_keys=True).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, data)
        except OSError as err:  # a full disk must not fail the job that just finished
            log.warning("dsops: cannot save stage times %s: %s", self.path, err)


class WeightedProgress:
    """A job's overall 0..1 fraction from its stage plan, weighted by expected seconds.

    A stage whose key comes later in the plan starts that plan stage (those skipped count as
    done); any other stage is a step inside the current one (the commit's "Checking ...",
    "Writing ..."), which its weight already covers. A first stage the plan did not foresee
    is put in front of it.
    """

    def __init__(self, plan: Sequence[str], expected: Callable[[str], float]) -> None:
        self.plan = list(plan)
        self.expected = expected  # seconds a stage key takes (learned, or the estimate)
        self.current = -1  # index in the plan of the running stage
        self.started = 0.0
        self.fraction = 0.0
        self.value = 0.0

    def on_stage(self, key: str, now: float) -> bool:
        """Whether stage ``key`` starts a stage of the plan (else it is inside the current)."""
        following = self.plan[self.current + 1 :]
        if key in following:
            self.current += 1 + following.index(key)
        elif self.current < 0:
            self.current = 0
            self.plan.insert(0, key)
        else:
            return False
        self.started, self.fraction = now, 0.0
        return True

    def on_fraction(self, fraction: float, now: float) -> float:
        self.fraction = max(self.fraction, min(1.0, max(0.0, fraction)))
        return self.at(now)

    def at(self, now: float) -> float:
        """The overall fraction at time ``now``: monotone, below 1."""
        if self.current < 0:
            return self.value
        weights = [max(0.1, self.expected(key)) for key in self.plan]
        stage = weights[self.current]
        creep = CREEP_LIMIT * (1.0 - math.exp(-max(0.0, now - self.started) / stage))
        done = sum(weights[: self.current]) + stage * max(self.fraction, creep)
        self.value = max(self.value, min(CEILING, done / sum(weights)))
        return self.value
