"""
The question both apps ask and answer about usage: how much did one subject use over
[start, end)? billing asks it of a usage source; the embedded meter answers it in SQL.
It lives in the project package, not in billing, so the embedded meter never imports
billing (billing loads the embedded meter, not the other way round) and no cycle exists.
"""

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class UsageRequest:
    """Usage of one subject over [start, end): both UTC and aligned to the meter's window."""

    subject: str
    start: datetime
    end: datetime

    def __post_init__(self):
        if self.start.utcoffset() is None or self.end.utcoffset() is None:
            raise ValueError("usage periods must be timezone-aware")
        if self.end < self.start:
            raise ValueError(f"usage period ends before it starts: {self.start} > {self.end}")
