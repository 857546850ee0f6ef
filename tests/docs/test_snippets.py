"""The code blocks of the documentation marked runnable run, and print what the page shows.

A block is runnable when the line before its opening fence (blank lines between allowed) is
``<!-- runnable -->``, in ``docs/*.md`` or ``README.md``. Mark only blocks that are safe, fast
and need no running service (no RabbitMQ, database or node).

* ``python``: the block is a script, run with this Python in an empty temporary directory.
* a block whose lines start with ``$ `` (``console``, or ``text``): a shell transcript. Each
  ``$`` line runs with bash in an empty temporary directory, with this environment's ``beds`` first
  on ``PATH``, and must exit 0. The lines below it, if any, are its expected standard output;
  a line ``…`` stands for lines left out, so then the others must appear in that order.
* ``bash``, ``sh``, ``shell`` without ``$`` lines: the whole block runs as one bash script.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
MARKER = "<!-- runnable -->"
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
SHELLS = {"bash", "sh", "shell", "console"}
TIMEOUT = 60


@attrs.frozen
class Snippet:
    """A runnable code block: where it is, its language and its text (dedented)."""

    page: str
    line: int
    language: str
    text: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


class MarkerError(ValueError):
    """A runnable marker that no code block follows."""


def find_snippets(page: str, text: str) -> list[Snippet]:
    """The blocks of ``text`` marked runnable (``page`` names it in the results)."""
    lines = text.splitlines()
    snippets = []
    for number, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        start = number + 1
        while start < len(lines) and not lines[start].strip():
            start += 1
        opening = _FENCE.match(lines[start]) if start < len(lines) else None
        if opening is None:
            raise MarkerError(f"{page}:{number + 1}: {MARKER} is not followed by a code block")
        indent, fence = opening.group("indent"), opening.group("fence")
        info = opening.group("info").strip()
        language = info.split()[0] if info else ""
        body: list[str] = []
        for inner in lines[start + 1 :]:
            if inner.strip().startswith(fence) and not inner.strip().strip(fence[0]):
                break
            body.append(inner.removeprefix(indent))
        else:
            raise MarkerError(f"{page}:{start + 1}: the code block is not closed")
        snippets.append(Snippet(page, start + 1, language, "\n".join(body) + "\n"))
    return snippets


def all_snippets() -> list[Snippet]:
    return [
        snippet
        for path in PAGES
        for snippet in find_snippets(str(path.relative_to(ROOT)), path.read_text(encoding="utf-8"))
    ]


@attrs.frozen
class Step:
    """One ``$`` line of a transcript and the output the page shows below it."""

    command: str
    expected: tuple[str, ...]


def transcript(text: str) -> list[Step]:
    """The steps of a shell transcript (its ``$`` lines); [] if it has none."""
    steps: list[Step] = []
    command: str | None = None
    expected: list[str] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            if command is not None:
                steps.append(Step(command, tuple(expected)))
            command, expected = line[2:], []
        elif command is not None:
            expected.append(line.rstrip())
    if command is not None:
        steps.append(Step(command, tuple(expected)))
    return steps


def environment() -> dict[str, str]:
    """This environment's commands first on PATH; no BEDS_* variables; 80 columns, no colour."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BEDS_")}
    bin_dir = str(Path(sys.executable).parent)
    environ["PATH"] = os.pathsep.join([bin_dir, environ.get("PATH", "")])
    environ.update(COLUMNS="80", NO_COLOR="1")
    environ.pop("VIRTUAL_ENV", None)
    return environ


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def check_output(snippet: Snippet, step: Step, stdout: str) -> None:
    expected = [line for line in step.expected if line.strip()]
    if not expected:
        return
    actual = [line.rstrip() for line in stdout.splitlines() if line.strip()]
    where = f"{snippet.id}: `{step.command}`"
    if "…" not in expected:
        assert actual == expected, f"{where} prints something else than the page shows"
        return
    remaining = iter(actual)
    missing = [line for line in expected if line != "…" and line not in remaining]
    assert not missing, f"{where} does not print (in this order): {missing}\n{stdout}"


def test_snippets_are_found() -> None:
    snippets = all_snippets()
    languages = {snippet.language for snippet in snippets}
    assert "python" in languages
    assert {"console", "text"} & languages
    assert len(snippets) >= 5


def test_a_marker_without_a_block_is_an_error() -> None:
    with pytest.raises(MarkerError, match=r"page\.md:1"):
        find_snippets("page.md", f"{MARKER}\n\nSome prose.\n")


def test_a_marked_block_is_found_with_its_indentation_removed() -> None:
    text = f"Prose.\n\n  {MARKER}\n  ```console\n  $ beds --version\n  beds, version 0\n  ```\n"
    (snippet,) = find_snippets("page.md", text)
    assert (snippet.line, snippet.language) == (4, "console")
    assert transcript(snippet.text) == [Step("beds --version", ("beds, version 0",))]


@pytest.mark.parametrize("snippet", all_snippets(), ids=lambda snippet: snippet.id)
def test_runnable_snippet(snippet: Snippet, tmp_path: Path) -> None:
    if snippet.language in {"python", "py", "python3"}:
        script = tmp_path / "snippet.py"
        script.write_text(snippet.text, encoding="utf-8")
        result = run([sys.executable, str(script)], tmp_path)
        assert result.returncode == 0, f"{snippet.id} failed:\n{result.stdout}{result.stderr}"
        return
    steps = transcript(snippet.text)
    if steps:
        for step in steps:
            result = run(["bash", "-c", step.command], tmp_path)
            assert result.returncode == 0, (
                f"{snippet.id}: `{step.command}` exited {result.returncode}:\n"
                f"{result.stdout}{result.stderr}"
            )
            check_output(snippet, step, result.stdout)
        return
    assert snippet.language in SHELLS, f"{snippet.id}: cannot run a {snippet.language!r} block"
    result = run(["bash", "-euo", "pipefail", "-c", snippet.text], tmp_path)
    assert result.returncode == 0, f"{snippet.id} failed:\n{result.stdout}{result.stderr}"
