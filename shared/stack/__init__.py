"""The local stack: Kafka, Redis and PostgreSQL on loopback, started by Caliber itself."""

from shared.stack.base import ComponentStatus, StartAction, StopAction
from shared.stack.manager import UpResult, stack_down, stack_reset, stack_status, stack_up
from shared.stack.process import StackError
from shared.stack.topics_admin import delete_topics, ensure_topics

__all__ = [
    "ComponentStatus",
    "StackError",
    "StartAction",
    "StopAction",
    "UpResult",
    "delete_topics",
    "ensure_topics",
    "stack_down",
    "stack_reset",
    "stack_status",
    "stack_up",
]
