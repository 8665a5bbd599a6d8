"""The local stack: Kafka, Redis and PostgreSQL on loopback, started by Caliber itself."""

from tooling.stack.base import ComponentStatus, StartAction, StopAction
from tooling.stack.manager import UpResult, stack_down, stack_reset, stack_status, stack_up
from tooling.stack.process import StackError
from tooling.stack.topics_admin import delete_topics, ensure_topics

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
