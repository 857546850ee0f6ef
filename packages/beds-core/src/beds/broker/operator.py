"""Operator commands: pause or resume a broker, drain a node, from the admin role.

An operator (a principal with the ``admin`` role) sends a request to the built-in template
``beds_operator`` (routing class ``admin``: the admin role's ``adminBrokerIn`` serves it), for
example ``{"command": "pause", "broker": "wBroker", "node": "app-2"}``. The admin node publishes
it on the control stream as an ``operator.command`` event; every node of the environment reads
it, the ones it names act on it and answer ``operator.done``, and the admin node replies with
the nodes that answered within ``wait`` seconds (``beds admin pause|resume|drain``).

- ``pause`` stops a broker (``"*"``: every broker) taking messages: what it holds finishes and
  is settled as usual; the rest waits in its queue (or is served by the same broker on other
  nodes).
- ``resume`` undoes ``pause`` (and ``drain``).
- ``drain`` pauses every broker of the node and marks it ``draining``: ``/ready`` answers 503,
  so it can be stopped without a request being cut short.

A command published before a node started is not applied by it (the stream replays the past to
a starting node): commands act on the nodes running when they are sent.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import TYPE_CHECKING, Any, Final

import attrs
from loguru import logger

from beds.envelopes import Operation
from beds.errors import Unauthenticated, Unauthorized, UnsupportedOperation, ValidationFailed

if TYPE_CHECKING:
    from collections.abc import Mapping

    from beds.auth.principal import Principal
    from beds.broker.pool import BrokerPool
    from beds.dispatch import Builtin
    from beds.envelopes import Request
    from beds.transport.control import ControlChannel
    from beds.transport.control_event import ControlEvent

__all__ = (
    "COMMAND_KIND",
    "DONE_KIND",
    "OPERATOR_ROLE",
    "Command",
    "apply_command",
    "operator_template",
    "parse_command",
)

COMMAND_KIND: Final = "operator.command"
DONE_KIND: Final = "operator.done"
OPERATOR_ROLE: Final = "admin"
"""The role a principal needs to send operator commands."""

_COMMANDS = frozenset({"pause", "resume", "drain"})
_KEYS = frozenset({"command", "broker", "node", "wait"})
_NAME = re.compile(r"^(\*|[A-Za-z][A-Za-z0-9_.-]{0,62})$")
_MAX_WAIT = 30.0


@attrs.frozen(kw_only=True)
class Command:
    """One operator command as it travels on the control stream."""

    command: str
    broker: str = "*"
    """The broker it acts on (``"*"``: every broker; ``drain`` acts on every broker)."""
    node: str = "*"
    """The node it acts on (``"*"``: every node of the environment)."""
    wait: float = 2.0
    """Seconds the admin node collects the nodes' answers before it replies."""

    def concerns(self, node: str) -> bool:
        """Whether the node named ``node`` acts on it."""
        return self.node in ("*", node)


def parse_command(data: Mapping[str, Any], path: str = "$.payload") -> Command:
    """Check a command's fields.

    Raises:
        ValidationFailed: an unknown command or key, a bad name or wait; each problem names its
            path.
    """
    problems = [f"{path}.{key}: is not a command key" for key in sorted(set(data) - _KEYS)]
    command = data.get("command")
    if command not in _COMMANDS:
        problems.append(f"{path}.command: must be one of drain, pause, resume")
    for key in ("broker", "node"):
        value = data.get(key, "*")
        if not isinstance(value, str) or not _NAME.fullmatch(value):
            problems.append(f"{path}.{key}: must be a name or '*'")
    wait = data.get("wait", 2.0)
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= _MAX_WAIT:
        problems.append(f"{path}.wait: must be seconds from 0 to {_MAX_WAIT:g}")
    if problems:
        raise ValidationFailed("the operator command is not valid", details=problems)
    return Command(
        command=str(command),
        broker=str(data.get("broker", "*")),
        node=str(data.get("node", "*")),
        wait=float(wait),
    )


def operator_template(control: ControlChannel) -> Builtin:
    """The admin node's ``beds_operator`` template: publish a command, collect the answers."""
    answers: dict[str, list[dict[str, Any]]] = {}

    def answered(event: ControlEvent) -> None:
        waiting = answers.get(str(event.data.get("ref", "")))
        if waiting is not None:
            waiting.append({k: v for k, v in event.data.items() if k != "ref"})

    control.subscribe(DONE_KIND, answered)

    async def operator(request: Request, principal: Principal | None) -> dict[str, Any]:
        if request.operation is not Operation.CREATE:
            raise UnsupportedOperation("beds_operator only takes create (a command)")
        if principal is None:
            raise Unauthenticated("operator commands need a credential")
        if OPERATOR_ROLE not in principal.roles:
            raise Unauthorized(
                f"operator commands need the {OPERATOR_ROLE!r} role",
                details=(f"principal: {principal.handle}",),
            )
        command = parse_command(request.payload)
        ref = os.urandom(16).hex()  # answers may arrive before publish returns: known first
        collected: list[dict[str, Any]] = []
        answers[ref] = collected
        try:
            body = {**attrs.asdict(command), "by": principal.handle, "ref": ref}
            await control.publish(COMMAND_KIND, body)
            await asyncio.sleep(command.wait)
        finally:
            answers.pop(ref, None)
        logger.warning(
            "operator {} sent {} (broker {}, node {}): {} nodes answered",
            principal.handle,
            command.command,
            command.broker,
            command.node,
            len(collected),
        )
        return {
            "ref": ref,
            **attrs.asdict(command),
            "answered": sorted(collected, key=lambda answer: str(answer.get("node"))),
        }

    return operator


async def apply_command(command: Command, pools: Mapping[str, BrokerPool]) -> dict[str, Any]:
    """Act on ``command`` with this node's pools; return what each broker does now.

    Raises:
        ValueError: the command names a broker this node does not run.
    """
    names = sorted(pools) if command.broker == "*" or command.command == "drain" else []
    if not names:
        if command.broker not in pools:
            raise ValueError(f"this node runs no broker {command.broker!r}")
        names = [command.broker]
    for name in names:
        pool = pools[name]
        if command.command == "resume":
            await pool.resume()
        else:
            await pool.pause()
    return {name: "paused" if pools[name].paused else "consuming" for name in sorted(pools)}
