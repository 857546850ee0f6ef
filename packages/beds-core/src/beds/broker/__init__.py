"""The broker runtime: per-message dispatch and supervised pools of broker tasks."""

from beds.broker.dispatch import Dispatcher as Dispatcher
from beds.broker.pool import BrokerPool as BrokerPool

__all__ = ("BrokerPool", "Dispatcher")
