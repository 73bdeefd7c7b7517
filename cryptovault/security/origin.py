"""Where a request came from: what sessions and audit entries remember about it."""

from __future__ import annotations

from dataclasses import dataclass

MAX_USER_AGENT = 256


@dataclass(frozen=True, slots=True)
class Origin:
    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None

    def __post_init__(self) -> None:
        # A user agent is attacker-chosen text that ends up in the store and in lists.
        if self.user_agent is not None and len(self.user_agent) > MAX_USER_AGENT:
            object.__setattr__(self, "user_agent", self.user_agent[:MAX_USER_AGENT])


SYSTEM = Origin(ip=None, user_agent="cryptovault-cli", request_id=None)
