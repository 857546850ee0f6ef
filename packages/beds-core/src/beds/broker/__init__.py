"""The broker runtime: supervised pools of broker tasks feeding the dispatcher (beds.dispatch)."""

from beds.broker.pool import BrokerPool as BrokerPool
from beds.dispatch import Dispatcher as Dispatcher

__all__ = ("BrokerPool", "Dispatcher")
