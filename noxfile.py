"""Every automated task. CI and people run the same sessions (see ./dev and README)."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "typecheck", "tests", "integration", "docs", "dist"]

PYPROJECT = nox.project.load_toml("pyproject.toml")
PACKAGES = (
    "beds-core",
    "beds-rec",
    "beds-rel",
    "beds-templates-example",
    "beds-identity",
    "beds-http",
    "beds-ai",
)
ALL = [f"./packages/{name}" for name in PACKAGES]
EXTRAS = {"beds-rec": "[embedded]"}  # its unit tests construct the embedded-server mode
NEEDS = {"beds-identity": ("beds-rel",)}
"""Other BEDS packages a package depends on (not on a package index yet: built here too)."""


def group(name: str) -> list[str]:
    return list(nox.project.dependency_groups(PYPROJECT, name))


def locked(session: nox.Session) -> list[str]:
    """``-c FILE``: uv.lock's versions as constraints, so every session installs what CI tested.

    A dependency the lock does not know yet (added without ``uv lock``) is not constrained.
    """
    path = f"{session.create_tmp()}/uv-lock-constraints.txt"
    # run_install: the constraints are part of installing, so --install-only writes them too.
    session.run_install(
        "uv",
        "export",
        "--frozen",
        "--all-groups",
        "--all-extras",
        "--no-hashes",
        "--no-emit-workspace",
        "--no-header",
        "--quiet",
        "--output-file",
        path,
        external=True,
        silent=True,
    )
    return ["-c", path]


def install_workspace(session: nox.Session, *groups: str) -> None:
    """Install every BEDS package (editable) plus dependency groups, at the locked versions."""
    editable = [arg for path in ALL for arg in ("-e", path)]
    session.install(
        *editable,
        "./packages/beds-rec[embedded]",
        *(d for g in groups for d in group(g)),
        *locked(session),
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff format --check and ruff check over the whole repository."""
    session.install(*group("lint"), *locked(session))
    session.run("ruff", "format", "--check", ".")
    session.run("ruff", "check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over every package's sources and every test folder."""
    # The benchmarks are type-checked too, without their peers (FastStream, Nameko…): mypy
    # treats those imports as untyped (pyproject, [tool.mypy] overrides).
    install_workspace(session, "typecheck")
    session.run("mypy")
    for conftest in SEPARATE_CONFTESTS:
        session.run("mypy", conftest)


SEPARATE_CONFTESTS = ("packages/beds-http/tests/conftest.py", "packages/beds-ai/tests/conftest.py")
"""conftest.py files mypy checks one at a time (pyproject, [tool.mypy] exclude)."""


COVERAGE_FLOORS = {
    "beds-core": ("beds", 55),
    "beds-rec": ("beds_rec", 55),
    "beds-rel": ("beds_rel", 60),
    "beds-templates-example": ("beds_templates_example", 90),
    "beds-identity": ("beds_identity", 60),
    "beds-http": ("beds_http", 75),
    "beds-ai": ("beds_ai", 90),
}
"""Each package's import name and the branch coverage its unit tests must keep (percent): a
floor a little under what they measure, raised as tests are added. The integration tests (real
services) cover much of the rest; the report lists what the unit tests leave out."""


@nox.session
@nox.parametrize("package", PACKAGES)
def tests(session: nox.Session, package: str) -> None:
    """One package's unit tests, with only that package (and beds-core) installed."""
    packages = ["./packages/beds-core", *(f"./packages/{need}" for need in NEEDS.get(package, ()))]
    if package != "beds-core":
        packages.append(f"./packages/{package}{EXTRAS.get(package, '')}")
    session.install(*packages, *group("unit"), *locked(session))
    module, floor = COVERAGE_FLOORS[package]
    session.run(
        "pytest",
        f"packages/{package}/tests",
        "-p",
        "no:cacheprovider",
        f"--cov={module}",
        "--cov-branch",
        "--cov-report=term:skip-covered",
        f"--cov-fail-under={floor}",
        *session.posargs,
    )


@nox.session
def integration(session: nox.Session) -> None:
    """Cross-package tests against the real RabbitMQ, MariaDB and a MongoDB wire server."""
    install_workspace(session, "test")
    session.run("pytest", "tests", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation with warnings as errors, then run its tests (tests/docs).

    They check the pages against the code and run the code blocks marked ``<!-- runnable -->``
    with this session's Python and ``beds`` (every workspace package installed); no services.
    """
    install_workspace(session, "docs", "test")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")
    session.run("pytest", "tests/docs", "-p", "no:cacheprovider", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """Install the schema, start a node serving the example domain, and call it."""
    install_workspace(session)
    session.run("beds", "schema", "apply")
    session.run("python", "examples/demo.py", *session.posargs)


@nox.session(default=False)
def spew(session: nox.Session) -> None:
    """Install the schema, run a node and the HTTP edge (SPEW at http://127.0.0.1:8080/).

    Serves until Ctrl-C, which stops both. ``-- --port N`` picks another port.
    """
    install_workspace(session)
    session.run("beds", "schema", "apply")
    session.run("python", "examples/spew.py", *session.posargs)


@nox.session
def dist(session: nox.Session) -> None:
    """Build every wheel, install each with only what it declares, and import its plugin."""
    import pathlib
    import tempfile

    session.install("build")
    out = pathlib.Path(tempfile.mkdtemp(prefix="beds-dist-"))
    for name in PACKAGES:
        session.run(
            "python",
            "-m",
            "build",
            "--wheel",
            "--outdir",
            str(out),
            f"packages/{name}",
            silent=True,
        )
    core = next(out.glob("beds_core-*.whl"))
    for name in PACKAGES:
        wheel = next(out.glob(f"{name.replace('-', '_')}-*.whl"))
        venv = out / f"venv-{name}"
        session.run("uv", "venv", "--quiet", str(venv), external=True)
        python = str(venv / "bin" / "python")
        session.run(
            "uv",
            "pip",
            "install",
            "--quiet",
            "--python",
            python,
            str(core),
            *(
                str(next(out.glob(f"{need.replace('-', '_')}-*.whl")))
                for need in NEEDS.get(name, ())
            ),
            str(wheel),
            external=True,
        )
        session.run(python, "-c", CHECK_WHEEL, name, external=True)


CHECK_WHEEL = """
import sys
from importlib import metadata
name = sys.argv[1]
if name == "beds-core":
    import beds.cli  # the command imports with only its own dependencies
else:
    eps = [
        ep
        for group in ("beds", "beds.commands")
        for ep in metadata.entry_points(group=group)
        if ep.dist.name == name
    ]
    assert eps, f"{name} registers no beds or beds.commands entry point"
    for ep in eps:
        ep.load()
print(name, "installs and loads alone")
"""


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks against the AMQP and database ceilings and peers; writes docs/benchmarks/.

    Needs RabbitMQ (and rabbitmqctl) and MariaDB; not part of the test run. Pass options
    after ``--``: ``nox -s bench -- --quick`` for a smoke run, ``--profile`` to py-spy the node.
    """
    install_workspace(session, "bench")
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session(default=False)
def soak(session: nox.Session) -> None:
    """Ten minutes of steady mixed load on one node; fails if a request fails or memory grows.

    Needs RabbitMQ (and rabbitmqctl) and MariaDB; not part of the test run. Pass options after
    ``--``: ``--minutes 1``, ``--in-flight 16``, ``--max-growth 1.05``, ``--out DIR``.
    """
    install_workspace(session, "bench")
    session.run("python", "benchmarks/soak.py", *session.posargs)
