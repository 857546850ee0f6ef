"""``rabbitmqctl`` as a subprocess, without ever a password on its command line.

``rabbitmqctl add_user NAME PASSWORD`` would put the password in the process table, where every
local user can read it (``ps``). Here no password is ever an argument: ``add_user`` and
``change_password`` are run without one, and rabbitmqctl reads it from stdin (3.10 and later);
whether a user's password is already right is asked with ``rabbitmqctl eval`` and an expression
given on stdin, the password written as Erlang byte values (``<<104,105>>``), so that nothing in
it can end the literal. Commands and their errors are printed; stdin never is.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from typing import Any

import attrs
import orjson

from beds.errors import BedsError

__all__ = ("Permissions", "RabbitCtl", "command")


@attrs.frozen(kw_only=True)
class Permissions:
    """The three permission regexes of one user on one vhost."""

    configure: str
    write: str
    read: str

    def items(self) -> tuple[tuple[str, str], ...]:
        """``(name, regex)`` for configure, write and read, in rabbitmqctl's order."""
        return (("configure", self.configure), ("write", self.write), ("read", self.read))


def command(*args: str) -> str:
    """A rabbitmqctl command line as a shell would read it."""
    return shlex.join(["rabbitmqctl", *args])


def _erlang_binary(text: str) -> str:
    """``text`` as an Erlang binary of byte values: nothing in it can end the literal."""
    return "<<" + ",".join(str(byte) for byte in text.encode("utf-8")) + ">>"


class RabbitCtl:
    """``rabbitmqctl`` as a subprocess. No argument ever holds a secret (module docstring).

    Args:
        path: the rabbitmqctl executable.
        timeout: seconds one command may take.
    """

    def __init__(self, path: str, *, timeout: float = 60.0) -> None:
        self.path = path
        self.timeout = timeout

    @classmethod
    def find(cls) -> RabbitCtl | None:
        """Find rabbitmqctl on ``PATH`` (or the usual sbin folders), if installed."""
        found = shutil.which("rabbitmqctl") or shutil.which(
            "rabbitmqctl", path="/usr/sbin:/usr/local/sbin:/opt/rabbitmq/sbin"
        )
        return cls(found) if found else None

    def run(self, *args: str, stdin: str | None = None) -> str:
        """Run one command; its standard output.

        Raises:
            BedsError: it failed; the message names the command (never stdin) and its error.
        """
        try:
            done = subprocess.run(
                [self.path, "-q", *args],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BedsError(f"{command(*args)} failed: {type(exc).__name__}") from None
        if done.returncode != 0:
            said = " ".join((done.stderr or done.stdout).split())[:300] or "no message"
            raise BedsError(f"{command(*args)} failed ({done.returncode}): {said}")
        return done.stdout

    def json(self, *args: str) -> Any:
        """A listing command's JSON output."""
        return orjson.loads(self.run(*args, "--formatter", "json") or "[]")

    def vhosts(self) -> set[str]:
        """The vhosts."""
        return {str(row["name"]) for row in self.json("list_vhosts")}

    def users(self) -> dict[str, list[str]]:
        """Every user with its tags."""
        return {
            str(row["user"]): [str(tag) for tag in row["tags"]] for row in self.json("list_users")
        }

    def permissions(self, user: str) -> dict[str, Permissions]:
        """A user's permissions by vhost."""
        return {
            str(row["vhost"]): Permissions(
                configure=row["configure"], write=row["write"], read=row["read"]
            )
            for row in self.json("list_user_permissions", user)
        }

    def add_user(self, user: str, password: str) -> None:
        """Create a user; rabbitmqctl reads the password from stdin."""
        self.run("add_user", user, stdin=password + "\n")

    def change_password(self, user: str, password: str) -> None:
        """Set a user's password; rabbitmqctl reads it from stdin."""
        self.run("change_password", user, stdin=password + "\n")

    def password_is(self, user: str, password: str) -> bool:
        """Whether ``password`` is the user's, asked through ``eval`` with the code on stdin."""
        code = (
            "case rabbit_access_control:check_user_pass_login("
            f"{_erlang_binary(user)}, {_erlang_binary(password)}) of "
            "{ok, _} -> beds_yes; _ -> beds_no end."
        )
        return self.run("eval", stdin=code).strip() == "beds_yes"
