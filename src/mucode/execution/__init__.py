"""Sandboxed execution of untrusted programs against tests.

`Executor` is the entry point; `Limits` sets what one program may use. See `worker.py` for the
isolation design and `judge.py` for how verdicts are decided.
"""

from mucode.execution.limits import Limits
from mucode.execution.pool import Executor, IsolationUnavailable


__all__ = ["Executor", "IsolationUnavailable", "Limits"]
