"""What the user asked for, frozen. Built by the CLI, read by the views."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    bridge: str
    netns: str | None = None
    interval: float = 2.0            # seconds between refreshes
    duration: float | None = None    # None: until Ctrl-C / SIGTERM
    output: str = "table"            # table | json
    ready_file: str | None = None    # written once every probe is attached
    events_per_sec: int = 100        # per-CPU cap on sampled records
    width: int = 80                  # table width

    @property
    def json(self) -> bool:
        return self.output == "json"
