"""The factory dispatch: one request, without any transport, from bytes to a response.

:class:`Dispatcher` runs a request through its steps (:mod:`beds.dispatch.dispatcher`): decode,
route check (:mod:`~beds.dispatch.routes`), deadline, template, access, validation, call plan,
store call with retries (:mod:`~beds.dispatch.retry`) and audit (:mod:`~beds.dispatch.audit`).
The broker runtime (:mod:`beds.broker`) feeds it deliveries; embedding and unit tests call it
directly.
"""

from beds.dispatch.dispatcher import Builtin, Dispatcher, EventSink

__all__ = ("Builtin", "Dispatcher", "EventSink")
