"""The configuration loader: schema version, layers, environment, roles, secrets, errors.

Files are written to ``tmp_path`` and the environment is passed as ``environ=``, so nothing here
reads the process environment or needs a service.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import tomlkit
from hypothesis import given, settings
from hypothesis import strategies as st

from beds.calgon.lanes import node_lanes
from beds.config import Config, load_config
from beds.config.defaults import DEFAULTS
from beds.config.model import CONFIG_SCHEMA_VERSION
from beds.errors import ConfigError
from beds.node import BedsNode, StartupError
from beds.transport.amqp import declare_topology

if TYPE_CHECKING:
    from collections.abc import Callable

CONFIGURATION_PAGE = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """``write(text, name="beds.toml")``: a config file in ``tmp_path``."""

    def write_file(text: str, name: str = "beds.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write_file


def error_of(path: Path | None, **kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(path, **kwargs)
    return caught.value


# -- schema_version --------------------------------------------------------------------------


def test_a_base_file_without_schema_version_is_refused(write: Callable[..., Path]) -> None:
    path = write('[node]\nname = "n1"\n')
    error = error_of(path, environ={})
    assert (error.file, error.key) == (str(path), "schema_version")
    assert str(error) == (
        "schema_version: is required in the base file; this BEDS reads version 1 (add "
        f"schema_version = 1 at the top) (file {path}, key schema_version)"
    )


def test_the_development_default_needs_no_file_and_no_schema_version() -> None:
    config = load_config(None, environ={})
    assert config.schema_version == CONFIG_SCHEMA_VERSION
    assert config.files == ()


def test_an_older_schema_version_asks_for_a_migration(write: Callable[..., Path]) -> None:
    path = write("schema_version = 0\n")
    error = error_of(path, environ={})
    assert (error.file, error.key) == (str(path), "schema_version")
    assert "version 0 is older than version 1, which this BEDS reads: migrate the file to " in (
        str(error)
    )
    assert 'docs/configuration.md, "Schema versions"' in str(error)


def test_a_newer_schema_version_says_this_beds_is_too_old(write: Callable[..., Path]) -> None:
    path = write("schema_version = 2\n")
    error = error_of(path, environ={})
    assert (error.file, error.key) == (str(path), "schema_version")
    assert "version 2 is unknown to this BEDS, which reads version 1: this BEDS is too old" in (
        str(error)
    )
    assert "migrate" not in str(error)


@pytest.mark.parametrize("value", ['"1"', "1.0", "true", "[1]"])
def test_a_schema_version_that_is_no_integer_is_refused(
    write: Callable[..., Path], value: str
) -> None:
    path = write(f"schema_version = {value}\n")
    error = error_of(path, environ={})
    assert str(error).startswith("schema_version: must be an integer, got ")
    assert "; this BEDS reads version 1 (file " in str(error)
    assert error.file == str(path)


def test_a_later_layer_cannot_change_the_schema_version(write: Callable[..., Path]) -> None:
    write("schema_version = 1\n")
    env_file = write("schema_version = 2\n", "env_qa.toml")
    error = error_of(env_file.with_name("beds.toml"), environ={"BEDS_ENV": "qa"})
    assert error.file == str(env_file)
    error = error_of(
        env_file.with_name("beds.toml"), environ={"BEDS__SCHEMA_VERSION": "0", "BEDS_ENV": "x"}
    )
    assert error.file == "<environment> BEDS__SCHEMA_VERSION"


# -- layers and the environment --------------------------------------------------------------


def test_the_environment_file_is_merged_deeply(write: Callable[..., Path]) -> None:
    base = write(
        "schema_version = 1\n"
        '[node]\nenv = "qa"\nname = "base"\n'
        '[roles.appServer.brokers.rBroker]\ninstances = 3\nbindings = ["spew_post.read"]\n'
        '[stores.rel]\nurl = "mysql://beds@db/spew"\npool_max = 4\n'
    )
    env_file = write(
        "[roles.appServer.brokers.rBroker]\ninstances = 5\n"
        '[stores.rel]\nurl = "mysql://beds:pw@db/spew"\n',
        "env_qa.toml",
    )
    config = load_config(base, environ={})  # node.env of the base file picks env_qa.toml
    assert config.files == (str(base), str(env_file))
    rbroker = config.brokers["rBroker"]
    assert (rbroker.instances, rbroker.bindings) == (5, ("spew_post.read",))
    assert config.brokers["wBroker"].bindings == ("*.write",)  # the seed role is kept
    assert config.stores["rel"] == {"url": "mysql://beds:pw@db/spew", "pool_max": 4}
    assert config.node.name == "base"


def test_beds_env_chooses_the_environment_file_and_sets_node_env(
    write: Callable[..., Path],
) -> None:
    base = write('schema_version = 1\n[node]\nenv = "qa"\n')
    write('[node]\nname = "from-qa"\n', "env_qa.toml")
    prod = write('[node]\nname = "from-prod"\n', "env_prod.toml")
    config = load_config(base, environ={"BEDS_ENV": "prod"})
    assert (config.node.env, config.node.name) == ("prod", "from-prod")
    assert config.files == (str(base), str(prod))
    assert config.queue_name("rBroker") == "beds.prod.appServer.rBroker"


def test_environment_variables_set_single_keys(write: Callable[..., Path]) -> None:
    base = write('schema_version = 1\n[amqp]\nurl = "amqp://beds@mq/"\n')
    config = load_config(
        base,
        environ={
            "BEDS__ROLES__APPSERVER__BROKERS__RBROKER__INSTANCES": "16",
            "BEDS__AMQP__URL": "amqp://beds:s3cret@mq:5672/prod",  # plain text, unquoted
            "BEDS__ROLES__APPSERVER__BROKERS__RBROKER__BINDINGS": '["a.read", "b.read"]',
            "BEDS__LOG__LEVEL": '"DEBUG"',
            "NOT_BEDS": "ignored",
        },
    )
    assert config.brokers["rBroker"].instances == 16
    assert config.brokers["rBroker"].bindings == ("a.read", "b.read")
    assert config.amqp.url == "amqp://beds:s3cret@mq:5672/prod"
    assert config.log.level == "DEBUG"


def test_a_bad_environment_value_names_the_variable(write: Callable[..., Path]) -> None:
    base = write("schema_version = 1\n")
    error = error_of(base, environ={"BEDS__ROLES__APPSERVER__BROKERS__WBROKER__INSTANCES": "0"})
    assert error.key == "roles.appServer.brokers.wBroker.instances"
    assert error.file == "<environment> BEDS__ROLES__APPSERVER__BROKERS__WBROKER__INSTANCES"
    assert "must be at least 1, got 0" in str(error)

    error = error_of(base, environ={"BEDS__SCHEMA_VERSION__X": "1"})
    assert "environment variable BEDS__SCHEMA_VERSION__X sets a key below a non-table" in str(error)


# -- roles -----------------------------------------------------------------------------------


def test_the_role_argument_selects_the_brokers(write: Callable[..., Path]) -> None:
    base = write('schema_version = 1\n[node]\nrole = "admin"\n')
    assert set(load_config(base, environ={}).brokers) == set(DEFAULTS["roles"]["admin"]["brokers"])
    config = load_config(base, role="segundo", environ={})  # beds run --node segundo
    assert config.node.role == "segundo"
    assert config.brokers == {}, "whBroker consumes no queue"
    assert set(config.ticket_brokers) == {"whBroker"}
    declared = write(
        'schema_version = 1\n[roles.tercero.brokers.sBroker]\nbindings = ["beds_session.*"]\n'
    )
    tercero = load_config(declared, role="tercero", environ={})  # a role of the deployment's own
    assert set(tercero.brokers) == {"sBroker"}
    assert tercero.queue_name("sBroker") == "beds.dev.tercero.sBroker"


@pytest.mark.parametrize(
    ("table", "key", "message"),
    [
        ('type = "tickets"\nlane = "warehouse"\nbindings = ["a.read"]', "bindings", "consumes no"),
        ('type = "tickets"\nlane = "warehouse"\nqueue = "q"', "queue", "consumes no queue"),
        ('type = "tickets"\nlane = "warehouse"\nprefetch = 4', "prefetch", "consumes no queue"),
        ('type = "tickets"', "lane", "names the lane it runs"),
        ('type = "tickets"\nlane = "cold"', "lane", "must be one of 'default', 'warehouse'"),
        (
            'lane = "warehouse"\nbindings = ["a.read"]',
            "lane",
            'only for brokers of type = "tickets"',
        ),
        ('type = "tickets"\nlane = "warehouse"\ninstances = 0', "instances", "at least 1"),
    ],
)
def test_a_tickets_broker_is_checked_naming_the_key_and_file(
    write: Callable[..., Path], table: str, key: str, message: str
) -> None:
    base = write(f"schema_version = 1\n[roles.edge.brokers.tBroker]\n{table}\n")
    error = error_of(base, environ={})
    assert (error.key, error.file) == (f"roles.edge.brokers.tBroker.{key}", str(base))
    assert message in str(error)


def test_a_seed_whbroker_given_bindings_is_refused(write: Callable[..., Path]) -> None:
    # A config written for the old placeholder: the seed's type merges in, so it fails loudly.
    base = write('schema_version = 1\n[roles.segundo.brokers.whBroker]\nbindings = ["x.read"]\n')
    error = error_of(base, environ={})
    assert error.key == "roles.segundo.brokers.whBroker.bindings"
    assert 'not allowed on a type = "tickets" broker' in str(error)


def test_a_tickets_broker_runs_its_lane_beside_the_default_workers(
    write: Callable[..., Path],
) -> None:
    base = write(
        "schema_version = 1\n[calgon]\nworkers = 3\n"
        '[roles.appServer.brokers.sweeper]\ntype = "tickets"\nlane = "warehouse"\n'
    )
    app = load_config(base, environ={})
    assert "sweeper" not in app.brokers, "no queue, no pool"
    assert node_lanes(app) == {"default": 3, "warehouse": 1}
    assert node_lanes(app, "segundo") == {"warehouse": 2}
    assert node_lanes(app, "admin") == {}


def test_an_unknown_role_names_the_key_and_where_it_came_from(
    write: Callable[..., Path],
) -> None:
    base = write('schema_version = 1\n[node]\nrole = "segundo2"\n')
    error = error_of(base, environ={})
    assert str(error) == (
        "unknown role 'segundo2'; known roles: admin, appServer, segundo "
        f"(file {base}, key node.role)"
    )
    error = error_of(base, role="nobody", environ={})
    assert (error.file, error.key) == ("<command line --node>", "node.role")
    assert "unknown role 'nobody'" in str(error)


def test_a_new_role_can_be_configured(write: Callable[..., Path]) -> None:
    base = write(
        'schema_version = 1\n[roles.edge.brokers.eBroker]\ninstances = 2\nbindings = ["e.*"]\n'
    )
    config = load_config(base, role="edge", environ={})
    assert config.brokers["eBroker"].bindings == ("e.*",)
    assert "appServer" in config.roles


# -- secrets in production -------------------------------------------------------------------

PRODUCTION = 'schema_version = 1\n[node]\nmode = "production"\n'


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ('[amqp]\nurl = "amqp://beds:s3cret@mq/"', "amqp.url"),
        ('[stores.rel]\nurl = "mysql://beds:s3cret@db/spew"', "stores.rel.url"),
        ('[stores.rec]\nuri = "mongodb://beds:s3cret@m/"\ndatabase = "d"', "stores.rec.uri"),
        ('[stores.rec]\npassword = "s3cret"\ndatabase = "d"', "stores.rec.password"),
    ],
)
def test_production_refuses_a_password_in_the_base_file(
    write: Callable[..., Path], table: str, key: str
) -> None:
    base = write(f"{PRODUCTION}{table}\n")
    error = error_of(base, environ={})
    variable = "BEDS__" + key.upper().replace(".", "__")
    assert str(error) == (
        f"{key}: holds a password; in production secrets come from the environment "
        f"(set {variable}) or env_{{BEDS_ENV}}.toml (file {base}, key {key})"
    )
    # Development accepts it; so does production when the secret comes from elsewhere.
    assert not load_config(
        write(f"schema_version = 1\n{table}\n", "dev.toml"), environ={}
    ).production
    section, _, line = table.partition("\n")
    base = write(f"{PRODUCTION}{section}\n", "prod.toml")
    write(f"{section}\n{line}\n", "env_dev.toml")
    assert load_config(base, environ={}).production


def test_production_accepts_a_password_from_the_environment(write: Callable[..., Path]) -> None:
    base = write(f'{PRODUCTION}[amqp]\nurl = "amqp://beds@mq/"\n')
    config = load_config(base, environ={"BEDS__AMQP__URL": "amqp://beds:s3cret@mq/"})
    assert config.amqp.url == "amqp://beds:s3cret@mq/"


# -- key errors ------------------------------------------------------------------------------


def test_a_misspelt_key_names_its_dotted_path_and_file(write: Callable[..., Path]) -> None:
    base = write("schema_version = 1\n[roles.appServer.brokers.rBroker]\ninstanses = 2\n")
    error = error_of(base, environ={})
    assert str(error) == (
        "roles.appServer.brokers.rBroker.instanses: is not a known key "
        f"(file {base}, key roles.appServer.brokers.rBroker.instanses)"
    )

    write("schema_version = 1\n")
    env_file = write('[node]\nrol = "admin"\n', "env_dev.toml")
    error = error_of(base.with_name("beds.toml"), environ={})
    assert (error.file, error.key) == (str(env_file), "node.rol")


def test_every_problem_is_reported_the_first_with_its_file(write: Callable[..., Path]) -> None:
    base = write(
        'schema_version = 1\n[amqp]\nqueue_type = "lazy"\n[node]\nrol = "x"\n'
        "[roles.appServer.brokers.rBroker]\ninstances = 0\n"
    )
    error = error_of(base, environ={})
    assert str(error) == (
        """amqp.queue_type: must be "classic" or "quorum", got 'lazy' """
        f"(file {base}, key amqp.queue_type)"
    )
    assert error.__notes__ == [
        f"also node.rol: is not a known key ({base})",
        f"also roles.appServer.brokers.rBroker.instances: must be at least 1, got 0 ({base})",
    ]


@pytest.mark.parametrize("key", ["files", "store_files"])
def test_computed_keys_cannot_be_set(write: Callable[..., Path], key: str) -> None:
    base = write(f"schema_version = 1\n{key} = []\n")
    assert str(error_of(base, environ={})) == (
        f"{key}: is not a known key (file {base}, key {key})"
    )


def test_a_file_that_is_not_toml_or_is_missing_names_the_file(
    write: Callable[..., Path], tmp_path: Path
) -> None:
    base = write("schema_version = \n")
    assert str(error_of(base, environ={})).startswith("not valid TOML: ")
    missing = tmp_path / "nowhere.toml"
    assert str(error_of(missing, environ={})) == (
        f"cannot read config file: No such file or directory (file {missing})"
    )


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://mq/", "must be an amqp:// or amqps:// URL, got scheme 'http'"),
        ("amqp://[mq/", "is not a valid URL (check its host and port)"),
        ("amqp://mq:99999/", "is not a valid URL (check its host and port)"),
    ],
)
def test_a_bad_amqp_url_names_the_key(write: Callable[..., Path], url: str, words: str) -> None:
    base = write(f'schema_version = 1\n[amqp]\nurl = "{url}"\n')
    error = error_of(base, environ={})
    assert (error.file, error.key) == (str(base), "amqp.url")
    assert words in str(error)


# -- broker queue names ----------------------------------------------------------------------


def test_a_broker_queue_name_can_be_set(write: Callable[..., Path]) -> None:
    base = write('schema_version = 1\n[roles.appServer.brokers.rBroker]\nqueue = "orders.reads"\n')
    config = load_config(base, environ={})
    assert config.queue_name("rBroker") == "orders.reads"
    assert config.queue_name("wBroker") == "beds.dev.appServer.wBroker"  # empty: the default


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ('"amq.reads"', "must not start with 'amq.' (RabbitMQ reserves it), got 'amq.reads'"),
        (f'"{"q" * 256}"', "must be at most 255 bytes in UTF-8 (an AMQP queue name), got 256"),
        (f'"{"é" * 128}"', "must be at most 255 bytes in UTF-8 (an AMQP queue name), got 256"),
    ],
)
def test_a_bad_queue_name_names_the_key(write: Callable[..., Path], value: str, words: str) -> None:
    base = write(f"schema_version = 1\n[roles.appServer.brokers.rBroker]\nqueue = {value}\n")
    error = error_of(base, environ={})
    assert (error.file, error.key) == (str(base), "roles.appServer.brokers.rBroker.queue")
    assert words in str(error)


def test_the_longest_queue_name_is_accepted(write: Callable[..., Path]) -> None:
    base = write(f'schema_version = 1\n[roles.appServer.brokers.rBroker]\nqueue = "{"q" * 255}"\n')
    assert load_config(base, environ={}).queue_name("rBroker") == "q" * 255


class RecordingChannel:
    """Records the declarations ``declare_topology`` makes."""

    def __init__(self) -> None:
        self.queues: list[str] = []
        self.bindings: list[tuple[str, str, str]] = []

    async def exchange_declare(self, **_: Any) -> None:
        return None

    async def queue_declare(self, queue: str, **_: Any) -> None:
        self.queues.append(queue)

    async def queue_bind(self, queue: str, exchange: str, *, routing_key: str) -> None:
        self.bindings.append((queue, exchange, routing_key))


async def test_the_topology_declares_the_configured_queue_name(
    write: Callable[..., Path],
) -> None:
    base = write('schema_version = 1\n[roles.appServer.brokers.rBroker]\nqueue = "orders.reads"\n')
    config = load_config(base, environ={})
    channel = RecordingChannel()
    queues = await declare_topology(channel, config)  # type: ignore[arg-type]
    assert queues["rBroker"] == "orders.reads"
    assert "orders.reads" in channel.queues
    assert ("orders.reads", "beds.events", "*.read") in channel.bindings
    assert queues["wBroker"] == "beds.dev.appServer.wBroker"


# -- seed roles ------------------------------------------------------------------------------


def _seed_table() -> list[tuple[str, str, int, str, str]]:
    """The rows of docs/configuration.md's seed-role table: role, broker, instances, …"""
    text = CONFIGURATION_PAGE.read_text(encoding="utf-8")
    table = text.split("The seed roles (`beds.config.defaults`)", 1)[1].split("\n\n", 2)[1]
    rows = []
    role = ""
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        role = cells[0].strip("`") or role
        rows.append((role, cells[1].strip("`"), int(cells[2]), cells[3], cells[4]))
    return rows


def test_the_documented_seed_roles_match_the_defaults() -> None:
    documented = {
        (role, broker): (instances, bindings, purpose)
        for role, broker, instances, bindings, purpose in _seed_table()
    }
    seeded = {
        (role, broker): settings
        for role, table in DEFAULTS["roles"].items()
        for broker, settings in table["brokers"].items()
    }
    assert set(documented) == set(seeded)
    for where, seed in seeded.items():
        instances, bindings, purpose = documented[where]
        assert instances == seed["instances"], where
        if seed.get("type") == "tickets":  # no queue: the lane its workers run
            expected = f"none: runs the `{seed['lane']}` ticket lane"
        else:
            expected = ", ".join(f"`{b}`" for b in seed["bindings"])
        assert bindings == expected, where
        assert "placeholder" not in purpose, where
        if seed.get("type") == "logs":
            assert "logs exchange" in purpose, where


def test_no_seed_broker_is_a_placeholder() -> None:
    for role, table in DEFAULTS["roles"].items():
        for broker, seed in table["brokers"].items():
            assert seed["bindings"] if seed.get("type") != "tickets" else seed["lane"], (
                role,
                broker,
            )
    assert "tercero" not in DEFAULTS["roles"], "users and sessions are appServer's by default"
    assert "cBroker" not in DEFAULTS["roles"]["segundo"]["brokers"], "the cache is per node"


@pytest.mark.parametrize("mode", ["development", "production"])
def test_brokers_without_bindings_are_reported_idle_in_every_mode(
    write: Callable[..., Path], mode: str
) -> None:
    base = write(
        f'schema_version = 1\n[node]\nmode = "{mode}"\n[roles.edge.brokers.xBroker]\n'
        "instances = 2\n"
    )
    node = BedsNode(load_config(base, role="edge", environ={}))
    node.ipl.check_bindings()  # never raises, in production either
    assert [(c.name, c.status, c.detail) for c in node.checks] == [
        (
            "broker xBroker",
            "ok",
            "idle: no bindings, so its queue receives nothing "
            "(bind routing keys in [roles.edge.brokers.xBroker] bindings)",
        )
    ]
    segundo = BedsNode(load_config(base, role="segundo", environ={}))
    segundo.ipl.check_bindings()
    assert [(c.name, c.status, c.detail) for c in segundo.checks] == [
        ("broker whBroker", "ok", "runs warehouse tickets (2 workers)")
    ]
    admin = BedsNode(load_config(base, role="admin", environ={}))
    admin.ipl.check_bindings()
    assert admin.checks == []  # every admin broker has work
    bound = BedsNode(load_config(base, role="appServer", environ={}))
    bound.ipl.check_bindings()
    assert bound.checks == []


@pytest.mark.parametrize("mode", ["development", "production"])
def test_lineage_without_any_logs_broker_is_a_problem(
    write: Callable[..., Path], mode: str
) -> None:
    """Events nothing would store: a warning in development, fatal in production."""
    no_logs = f"""schema_version = 1
[node]
mode = "{mode}"
[roles.admin.brokers.adminLogsBroker]
type = "requests"
"""
    node = BedsNode(load_config(write(no_logs), environ={}))
    if mode == "production":
        with pytest.raises(StartupError, match="no role has a logs broker"):
            node.ipl.check_events_destination()
    else:
        node.ipl.check_events_destination()
        [check] = node.checks
        assert (check.name, check.status) == ("events", "warning")
        assert "set lineage.enabled = false" in check.detail
    quiet = BedsNode(
        load_config(write(no_logs + "[lineage]\nenabled = false\n", "off.toml"), environ={})
    )
    quiet.ipl.check_events_destination()  # no lineage and no audited template: nothing to keep
    assert quiet.checks == []
    seeded = BedsNode(load_config(write("schema_version = 1\n", "seed.toml"), environ={}))
    seeded.ipl.check_events_destination()  # the seed admin role's adminLogsBroker keeps them
    assert seeded.checks == []


# -- anything else is a ConfigError ----------------------------------------------------------

_KEYS = st.sampled_from(
    [
        "schema_version",
        "node",
        "role",
        "mode",
        "env",
        "name",
        "amqp",
        "url",
        "queue_type",
        "roles",
        "appServer",
        "brokers",
        "rBroker",
        "instances",
        "bindings",
        "queue",
        "type",
        "stores",
        "rel",
        "password",
        "log",
        "level",
        "files",
    ]
) | st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=6)

_VALUES = st.recursive(
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats()
    | st.text(st.characters(codec="utf-8"), max_size=8)  # utf-8: no lone surrogates
    | st.sampled_from(["production", "admin", "*.read", "amq.x", "amqp://u:p@h/", "http://[x"])
    | st.datetimes()
    | st.dates(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_KEYS, children, max_size=4),
    max_leaves=10,
)

_PATHS = [
    "schema_version",
    "node",
    "node.role",
    "node.mode",
    "node.env",
    "amqp",
    "amqp.url",
    "roles",
    "roles.appServer",
    "roles.appServer.brokers",
    "roles.appServer.brokers.rBroker",
    "roles.appServer.brokers.rBroker.bindings",
    "roles.appServer.brokers.rBroker.queue",
    "stores",
    "stores.rel",
    "stores.rel.url",
    "telemetry.port",
    "lineage",
]


def _put(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    table = data
    for part in parents:
        nested = table.setdefault(part, {})
        if not isinstance(nested, dict):
            return
        table = nested
    table[last] = value


def _load_text(text: str, name: str, environ: dict[str, str], role: str | None) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_text(text, encoding="utf-8")
        try:
            load_config(path, role=role, environ=environ)
        except ConfigError as exc:
            error: ConfigError | None = exc
        else:
            error = None
    # Every refusal says where: the file (or variable) and usually the key.
    assert error is None or re.search(r"\((file|key) ", str(error)), str(error)


@given(
    base=st.dictionaries(_KEYS, _VALUES, max_size=5),
    changes=st.lists(st.tuples(st.sampled_from(_PATHS), _VALUES), max_size=3),
    production=st.booleans(),
    environ=st.dictionaries(
        st.sampled_from(["BEDS__NODE__MODE", "BEDS__AMQP__URL", "BEDS__NODE", "BEDS_ENV"])
        | _KEYS.map(lambda key: f"BEDS__{key}__{key}"),
        st.text(max_size=8),
        max_size=2,
    ),
    role=st.none() | st.text(max_size=6),
)
@settings(max_examples=300, deadline=None)
def test_any_toml_either_loads_or_is_a_config_error(
    base: dict[str, Any],
    changes: list[tuple[str, Any]],
    production: bool,
    environ: dict[str, str],
    role: str | None,
) -> None:
    data: dict[str, Any] = {"schema_version": 1, **base}
    if production:
        _put(data, "node.mode", "production")
    for path, value in changes:
        _put(data, path, value)
    _load_text(tomlkit.dumps(data), "beds.toml", environ, role)


@given(
    key=st.sampled_from(["amqp.url", "stores.rel.url", "stores.rec.uri", "stores.rel.password"]),
    url=st.tuples(
        st.sampled_from(["amqp://", "amqps://", "mysql://", "mongodb://", "http://", ""]),
        st.text("u:p@[]%.x", max_size=8),
        st.sampled_from(["", ":", ":5672", ":99999", ":x"]),
        st.text("/?#x", max_size=4),
    ).map("".join),
    production=st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_any_url_either_loads_or_is_a_config_error(key: str, url: str, production: bool) -> None:
    data: dict[str, Any] = {"schema_version": 1, "node": {"mode": "production"}}
    if not production:
        data = {"schema_version": 1}
    _put(data, key, url)
    _load_text(tomlkit.dumps(data), "beds.toml", {}, None)


@given(st.text(max_size=200))
@settings(deadline=None)
def test_any_text_either_loads_or_is_a_config_error(text: str) -> None:
    _load_text(text, "beds.toml", {}, None)


def test_a_loaded_config_is_a_config() -> None:
    assert isinstance(load_config(None, environ={}), Config)


@pytest.mark.parametrize("mode", ["development", "production"])
def test_a_template_writable_by_anyone_by_omission_is_a_problem(
    write: Callable[..., Path], demo_template: Any, mode: str
) -> None:
    """No access rule for update and delete: a warning in development, fatal in production,
    unless auth.open_templates names the template; ``["*"]`` written out is on purpose."""
    node = BedsNode(
        load_config(write(f'schema_version = 1\n[node]\nmode = "{mode}"\n'), environ={})
    )
    node.ipl.templates["demo_item"] = demo_template
    if mode == "production":
        with pytest.raises(StartupError, match="anyone may update, delete"):
            node.ipl.check_open_templates()
    else:
        node.ipl.check_open_templates()
        [check] = node.checks
        assert (check.name, check.status) == ("template demo_item access", "warning")
        assert "auth.open_templates" in check.detail
    allowed = BedsNode(
        load_config(
            write(
                f'schema_version = 1\n[node]\nmode = "{mode}"\n'
                '[auth]\nopen_templates = ["demo_item"]\n',
                "open.toml",
            ),
            environ={},
        )
    )
    allowed.ipl.templates["demo_item"] = demo_template
    allowed.ipl.check_open_templates()
    assert allowed.checks == []


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ("[control]\nenabled = false\n", "the control channel is off"),
        ("[control]\nreplay_seconds = 60\n", "control.replay_seconds (60) is shorter"),
    ],
)
def test_revocations_that_might_not_reach_a_node_are_a_problem(
    write: Callable[..., Path], table: str, expected: str
) -> None:
    node = BedsNode(load_config(write("schema_version = 1\n" + table), environ={}))
    node.ipl.load_auth()
    [problem] = [c for c in node.checks if c.name == "auth revocations"]
    assert problem.status == "warning"
    assert expected in problem.detail
    fine = BedsNode(load_config(write("schema_version = 1\n", "fine.toml"), environ={}))
    fine.ipl.load_auth()
    assert [c.name for c in fine.checks] == ["auth"]


def test_a_secret_comes_from_a_file_named_by_a_FILE_variable(
    write: Callable[..., Path], tmp_path: Path
) -> None:
    secret = tmp_path / "amqp_url"
    secret.write_text("amqp://app:s3cr3t@127.0.0.1:5672/\n", encoding="utf-8")
    base = write("schema_version = 1\n")
    config = load_config(base, environ={"BEDS__AMQP__URL_FILE": str(secret)})
    assert config.amqp.url == "amqp://app:s3cr3t@127.0.0.1:5672/"
    with pytest.raises(ConfigError) as missing:
        load_config(base, environ={"BEDS__STORES__REL__URL_FILE": str(tmp_path / "nope")})
    assert missing.value.key == "stores.rel.url"
    assert "BEDS__STORES__REL__URL_FILE" in str(missing.value)
    assert "No such file" in str(missing.value)


def test_a_path_key_is_set_by_its_own_variable_and_a_secret_path_by_a_FILE_one(
    write: Callable[..., Path], tmp_path: Path
) -> None:
    base = write("schema_version = 1\n")
    config = load_config(
        base,
        environ={
            "BEDS__AMQP__TLS__CA_FILE": "/etc/beds/ca.pem",
            "BEDS__STORES__REL__TLS__KEY_FILE": "/etc/beds/db.key",
            "BEDS__AUTH__OIDC__JWKS_FILE": "/etc/beds/jwks.json",
        },
    )
    assert config.amqp.tls.ca_file == "/etc/beds/ca.pem"
    assert config.stores["rel"]["tls"] == {"key_file": "/etc/beds/db.key"}
    assert config.auth.oidc.jwks_file == "/etc/beds/jwks.json"
    held = tmp_path / "where-the-cert-is"
    held.write_text("/run/secrets/cert.pem\n", encoding="utf-8")
    config = load_config(base, environ={"BEDS__AMQP__TLS__CERT_FILE_FILE": str(held)})
    assert config.amqp.tls.cert_file == "/run/secrets/cert.pem"


@settings(max_examples=200, deadline=None)
@given(
    scheme=st.sampled_from(["amqp", "amqps", "http", "", "amqp:"]),
    host=st.sampled_from(["127.0.0.1", "[::1", "[mq", "mq:99999", "mq:-1", "", "h h"]),
    rest=st.text(alphabet="/:@?#[]% ab", max_size=6),
)
def test_no_config_error_echoes_the_password_of_a_url(scheme: str, host: str, rest: str) -> None:
    """A URL with a password that fails validation: the error names the key, never the secret."""
    url = f"{scheme}://user:Pw7secret{rest}@{host}/"
    try:
        load_config(None, environ={"BEDS__AMQP__URL": url})
    except ConfigError as exc:
        refused: ConfigError | None = exc
    else:
        refused = None
    assert refused is None or (refused.key, "Pw7secret" in str(refused)) == ("amqp.url", False)


def _table_keys(kind: type, prefix: str = "") -> list[str]:
    """Every key of the configuration whose value is a table (settings classes and dicts)."""
    import typing

    import attrs as attrs_

    keys = []
    hints = typing.get_type_hints(kind)
    for field in attrs_.fields(kind):
        hint = hints[field.name]
        if attrs_.has(hint):
            keys.append(f"{prefix}{field.name}")
            keys += _table_keys(hint, f"{prefix}{field.name}.")
        elif typing.get_origin(hint) is dict:
            keys.append(f"{prefix}{field.name}")
    return keys


@pytest.mark.parametrize("key", [k for k in _table_keys(Config) if k != "store_files"])
@pytest.mark.parametrize("value", ['"x"', "5", "[1]", "true"])
def test_a_table_given_another_value_says_so(
    write: Callable[..., Path], key: str, value: str
) -> None:
    *tables, name = key.split(".")
    header = f"[{'.'.join(tables)}]\n" if tables else ""
    path = write(f"schema_version = 1\n{header}{name} = {value}\n")
    with pytest.raises(ConfigError) as refused:
        load_config(path, environ={})
    assert refused.value.key == key
    assert f"{key}: must be a table" in str(refused.value)
