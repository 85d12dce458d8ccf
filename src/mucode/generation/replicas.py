"""Several replicas of one served model: which one gets the next request, and which to avoid.

    replicas = ReplicaSet(["http://node1:8000/v1/chat/completions", "http://node2:8000/v1/chat/completions"],
                          routing="least-loaded")
    replica = replicas.pick()                 # counts the request as in flight
    ...                                       # send it to replica.url
    replicas.release(replica, failed=False)   # a retryable failure takes the replica out for cooldown_s
    replicas.counts()                         # {url: {"requests", "failures", "in_flight"}}

Routing: `round-robin` takes the replicas in turn; `least-loaded` takes the one with the fewest
requests in flight from this process (ties in turn), which keeps a slow or busy replica from
collecting a queue. A replica whose request failed in a way worth retrying (no connection, timeout,
408, 429, 5xx) is skipped for `cooldown_s` seconds, then tried again; a retry never goes back to
the replica that just failed while another one is up. When every replica is down, requests still
go out (to the one that failed longest ago), so a restarted server is found again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


Routing = Literal["round-robin", "least-loaded"]
ROUTINGS: tuple[str, ...] = ("round-robin", "least-loaded")


@dataclass
class Replica:
    """One server and what this process has sent it."""

    url: str
    in_flight: int = 0
    requests: int = 0
    failures: int = 0  # retryable failures
    down_until: float = 0.0  # time.monotonic() before which the replica is skipped


class ReplicaSet:
    """Thread-safe choice among replica URLs (see the module docstring)."""

    def __init__(self, urls: Sequence[str], routing: Routing = "round-robin", cooldown_s: float = 30.0):
        if not urls:
            raise ValueError(
                "got no replica URL; pass at least one, e.g. ['http://127.0.0.1:8000/v1/chat/completions']"
            )
        if routing not in ROUTINGS:
            raise ValueError(f"got routing={routing!r}; choose one of {', '.join(ROUTINGS)}")
        if cooldown_s < 0:
            raise ValueError(f"got cooldown_s={cooldown_s}; it must be >= 0 (0 = never skip a failed replica)")
        self.replicas = [Replica(url) for url in urls]
        self.routing = routing
        self.cooldown_s = cooldown_s
        self._turn = 0  # where the next round-robin pick (or least-loaded tie-break) starts
        self._lock = threading.Lock()

    def pick(self, avoid: Replica | None = None) -> Replica:
        """The replica for the next request (counted as in flight until `release`). `avoid`: the
        replica that just failed, skipped whenever another one is up."""
        with self._lock:
            now = time.monotonic()
            up = [r for r in self._in_turn_order() if r.down_until <= now and r is not avoid]
            if not up:
                others = [r for r in self.replicas if r is not avoid] or self.replicas
                up = [min(others, key=lambda r: r.down_until)]
            chosen = min(up, key=lambda r: r.in_flight) if self.routing == "least-loaded" else up[0]
            self._turn = (self.replicas.index(chosen) + 1) % len(self.replicas)
            chosen.in_flight += 1
            chosen.requests += 1
            return chosen

    def release(self, replica: Replica, failed: bool) -> None:
        """The request to `replica` ended; `failed`: in a way that says the replica is unwell."""
        with self._lock:
            replica.in_flight -= 1
            if failed:
                replica.failures += 1
                replica.down_until = time.monotonic() + self.cooldown_s
            else:
                replica.down_until = 0.0

    def another_is_up(self, replica: Replica) -> bool:
        """Whether a retry can go to a replica other than `replica` right away."""
        with self._lock:
            now = time.monotonic()
            return any(r is not replica and r.down_until <= now for r in self.replicas)

    def counts(self) -> dict[str, dict[str, int]]:
        """Requests sent, retryable failures and requests in flight, per replica URL."""
        with self._lock:
            return {
                r.url: {"requests": r.requests, "failures": r.failures, "in_flight": r.in_flight}
                for r in self.replicas
            }

    def _in_turn_order(self) -> list[Replica]:
        return self.replicas[self._turn :] + self.replicas[: self._turn]
