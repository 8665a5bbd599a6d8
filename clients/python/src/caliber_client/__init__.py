"""Caliber's Python client: send predictions and labels (Kafka, or REST as a fallback),
calibrate confidences in-process with the active calibrator, and route requests.

The distribution is ``caliber-client`` (the name ``caliber`` on PyPI is another project).
"""

from caliber_client.appliers import ArtifactError, CalibrationMap
from caliber_client.calibration import LocalCalibrator
from caliber_client.client import Caliber
from caliber_client.errors import CaliberError, DeliveryError, RejectedError
from caliber_client.events import ROUTE_DECISION, Event, LabelEvent
from caliber_client.router import Candidate, Decision, RouterClient
from caliber_client.segments import segment_of

__all__ = [
    "ROUTE_DECISION",
    "ArtifactError",
    "Caliber",
    "CaliberError",
    "CalibrationMap",
    "Candidate",
    "Decision",
    "DeliveryError",
    "Event",
    "LabelEvent",
    "LocalCalibrator",
    "RejectedError",
    "RouterClient",
    "segment_of",
]
