"""The client's errors."""

from __future__ import annotations


class CaliberError(Exception):
    """Base of every error the client raises."""


class DeliveryError(CaliberError):
    """Events or labels that Caliber did not acknowledge.

    ``event_ids`` names them; ``reasons`` holds one message per failed message.
    """

    def __init__(self, event_ids: list[str], reasons: list[str]) -> None:
        self.event_ids = event_ids
        self.reasons = reasons
        shown = "; ".join(sorted(set(reasons))[:5])
        super().__init__(f"{len(event_ids)} events or labels were not delivered: {shown}")


class RejectedError(CaliberError):
    """Caliber refused a request as invalid (a 4xx other than 429); retrying cannot help.

    ``status`` is the HTTP status and ``detail`` the answer's ``detail`` (the fields and
    why).
    """

    def __init__(self, status: int, detail: object) -> None:
        self.status = status
        self.detail = detail
        super().__init__(f"Caliber answered {status}: {detail}")
