"""Static checks of infra/: compose, .env.example, Helm values, Dockerfile, init SQL agree with the code."""

from __future__ import annotations

import ast
import difflib
import importlib.util
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from lifelong import constants
from lifelong.settings import Settings

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
COMPOSE = INFRA / "docker-compose.yml"
COMPOSE_CPU = INFRA / "docker-compose.cpu.yml"
ENV_EXAMPLE = INFRA / ".env.example"
HELM_VALUES = INFRA / "helm" / "values.yaml"
DOCKERFILE = INFRA / "Dockerfile"
INIT_SQL = INFRA / "postgres" / "init.sql"
INFRA_README = INFRA / "README.md"

# Compose interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}.
VAR_REF = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")
# A secret-looking environment key: its value must be a required ${VAR}, never a literal or a default.
SECRET_KEY = re.compile(r"PASSWORD|SECRET|(?:^|_)KEY(?:$|_)|TOKEN|FERNET")
REQUIRED_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?\?[^}]*)?\}")
# user:password@ in a URL; the password may be a ${...} reference with spaces in its message.
URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^:/@\s]*:(?P<password>\$\{[^}]*\}|[^@\s/]+)@")
LIFELONG_NAME = re.compile(r"\bLIFELONG_[A-Z0-9_]*[A-Z0-9]\b")
QUEUES_OPTION = re.compile(r"(?:-q|--queues)[ =](\S+)")


# --------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------
class _ComposeLoader(yaml.SafeLoader):
    """SafeLoader that also reads Compose's merge tags (!reset, !override) in override files."""


class ResetTag:
    """Marker for a value that a Compose override file resets with ``!reset``."""


def _construct_reset(loader: yaml.SafeLoader, node: yaml.Node) -> ResetTag:
    return ResetTag()


def _construct_override(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


_ComposeLoader.add_constructor("!reset", _construct_reset)
_ComposeLoader.add_constructor("!override", _construct_override)


def load_yaml(path: Path) -> Any:
    """Parse a YAML file (Compose override tags allowed), failing with the file name on an error."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_ComposeLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        pytest.fail(f"{path.relative_to(REPO)} is not valid YAML: {exc}")


def parse_env(text: str, source: str) -> dict[str, str]:
    """Parse a Compose .env file: ``NAME=value`` lines, ``#`` comments, optional surrounding quotes."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"{source}:{number}: expected NAME=value, got {raw!r}"
        name = name.strip()
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name), f"{source}:{number}: bad name {name!r}"
        assert name not in values, f"{source}:{number}: {name} is declared twice"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[name] = value
    return values


def read_env_file(path: Path) -> dict[str, str]:
    """:func:`parse_env` of a file."""
    return parse_env(path.read_text(encoding="utf-8"), path.name)


class InterpolationError(Exception):
    """A ${VAR:?...} reference with VAR unset or empty: ``docker compose`` would refuse to start."""


def interpolate(text: str, env: dict[str, str]) -> str:
    """Resolve Compose variable references in ``text`` the way ``docker compose`` does."""

    def replace(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"] or ""
        value = env.get(name)
        if op in (None, ""):
            return value or ""
        unset_or_empty = value is None or (op.startswith(":") and value == "")
        if op.endswith("-"):
            return arg if unset_or_empty else value  # type: ignore[return-value]
        if op.endswith("?"):
            if unset_or_empty:
                raise InterpolationError(f"{name}: {arg}")
            return value  # type: ignore[return-value]
        return "" if unset_or_empty else arg  # ":+" / "+"

    pieces = text.split("$$")
    return "$".join(VAR_REF.sub(replace, piece) for piece in pieces)


def iter_strings(node: Any) -> Iterator[str]:
    """Every string value in a parsed YAML tree (mapping keys are not interpolated by Compose)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from iter_strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from iter_strings(value)


def as_environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's ``environment`` as a dict, whichever of the two Compose forms it uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def command_text(service: dict[str, Any]) -> str:
    """A service's ``command`` as one string."""
    command = service.get("command") or ""
    return " ".join(str(part) for part in command) if isinstance(command, list) else str(command)


def worker_queues(service: dict[str, Any]) -> list[str]:
    """Queues a Celery worker service consumes (``-q a,b`` / ``--queues a,b``)."""
    match = QUEUES_OPTION.search(command_text(service))
    return match.group(1).split(",") if match else []


def settings_env_names() -> set[str]:
    """Environment variable names that ``lifelong.settings.Settings`` reads."""
    prefix = Settings.model_config.get("env_prefix", "")
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else None
        names.add((alias or f"{prefix}{name}").upper())
    return names


def pools_created(script: str) -> dict[str, str]:
    """``{pool: slots}`` for every ``airflow pools set NAME SLOTS DESCRIPTION`` line of a shell script."""
    pools = {}
    # Shell line continuations first: shlex cannot split a line that ends in a backslash.
    for line in script.replace("\\\n", " ").replace("&&", "\n").splitlines():
        words = shlex.split(line.strip(), comments=True) if line.strip() else []
        if words[:3] == ["airflow", "pools", "set"]:
            assert len(words) >= 6, f"`airflow pools set` needs NAME SLOTS DESCRIPTION: {line.strip()!r}"
            pools[words[3]] = words[4]
    return pools


def load_make_env() -> ModuleType:
    """Import infra/make_env.py (infra/ is not a package)."""
    spec = importlib.util.spec_from_file_location("infra_make_env", INFRA / "make_env.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def filled_env() -> dict[str, str]:
    """.env.example with its empty secrets filled the way make_env.py does."""
    text, _ = load_make_env().render(ENV_EXAMPLE.read_text(encoding="utf-8"))
    return parse_env(text, "rendered .env")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), "compose file has no services"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def helm() -> dict[str, Any]:
    data = load_yaml(HELM_VALUES)
    assert isinstance(data, dict), "helm values must be a mapping"
    return data


def find_service(services: dict[str, dict[str, Any]], command: str) -> tuple[str, dict[str, Any]]:
    """The one service whose command is exactly ``command``."""
    found = [(name, svc) for name, svc in services.items() if command_text(svc) == command]
    assert len(found) == 1, f"expected one service running `{command}`, found {[n for n, _ in found]}"
    return found[0]


def airflow_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Services built from the project image (they all carry the x-airflow-common environment)."""
    return {name: svc for name, svc in services.items() if "AIRFLOW__CORE__EXECUTOR" in as_environment(svc)}


def celery_workers(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services.items() if command_text(s).startswith("airflow celery worker")}


# --------------------------------------------------------------------------------------------------------
# docker-compose.yml: structure
# --------------------------------------------------------------------------------------------------------
def test_compose_parses_with_common_anchor(compose: dict[str, Any], services: dict[str, Any]) -> None:
    assert "x-airflow-common" in compose
    airflow = airflow_services(services)
    # init, api-server, scheduler, dag-processor, triggerer, two workers, flower, cli
    assert len(airflow) >= 7, sorted(airflow)
    common_env = as_environment(compose["x-airflow-common"])
    for name, svc in airflow.items():
        env = as_environment(svc)
        missing = {k for k in common_env if k not in env}
        assert not missing, f"{name} lost common variables {sorted(missing)}"
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name


@pytest.mark.parametrize(
    "command",
    ["airflow api-server", "airflow scheduler", "airflow dag-processor", "airflow triggerer"],
)
def test_airflow_component_present(services: dict[str, Any], command: str) -> None:
    name, svc = find_service(services, command)
    assert "healthcheck" in svc, f"{name} has no healthcheck"
    waits_for = svc.get("depends_on", {})
    assert waits_for.get("airflow-init", {}).get("condition") == "service_completed_successfully", name


@pytest.mark.parametrize("name", ["postgres", "redis", "minio", "minio-init", "airflow-init"])
def test_backing_service_present(services: dict[str, Any], name: str) -> None:
    assert name in services, f"service {name!r} missing from {COMPOSE.name}"


def test_workers_split_by_queue(services: dict[str, Any]) -> None:
    workers = celery_workers(services)
    assert len(workers) >= 2, f"need a default and an unlearning worker, found {sorted(workers)}"
    by_queue = {name: worker_queues(svc) for name, svc in workers.items()}
    unlearning = [n for n, q in by_queue.items() if constants.QUEUE_UNLEARNING in q]
    default = [n for n, q in by_queue.items() if constants.QUEUE_DEFAULT in q]
    assert unlearning, f"no worker consumes queue {constants.QUEUE_UNLEARNING!r}: {by_queue}"
    assert default, f"no worker consumes queue {constants.QUEUE_DEFAULT!r}: {by_queue}"
    for name in unlearning:
        # Scoring shards must never wait behind (or land on) the GPU worker.
        assert by_queue[name] == [constants.QUEUE_UNLEARNING], f"{name} consumes {by_queue[name]}"
        assert re.search(r"--concurrency[ =]1\b", command_text(services[name])), f"{name}: concurrency 1"
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]} in devices
    for name in default:
        assert "deploy" not in services[name], f"{name} should not reserve a GPU"


def test_cpu_override_drops_only_the_gpu(services: dict[str, Any]) -> None:
    override = load_yaml(COMPOSE_CPU)["services"]
    unlearning = [
        n for n, s in celery_workers(services).items() if constants.QUEUE_UNLEARNING in worker_queues(s)
    ]
    assert set(override) == set(unlearning)
    for name in unlearning:
        assert isinstance(override[name]["deploy"], ResetTag)
        assert as_environment(override[name])["LIFELONG_DEVICE"] == "cpu"
        assert interpolate(as_environment(services[name])["LIFELONG_DEVICE"], {}) == "cuda"


def test_execution_api_url_points_at_the_api_server(services: dict[str, Any]) -> None:
    api_name, api = find_service(services, "airflow api-server")
    for name, svc in airflow_services(services).items():
        url = urlsplit(as_environment(svc)["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
        assert url.hostname == api_name, f"{name}: execution API host {url.hostname} != service {api_name}"
        assert url.path == "/execution/"
        assert any(str(p).endswith(f":{url.port}") for p in api.get("ports", [])), "API port not published"


def test_urls_point_at_compose_services(services: dict[str, Any]) -> None:
    env = filled_env()
    for name, svc in airflow_services(services).items():
        values = {k: interpolate(v, env) for k, v in as_environment(svc).items()}
        for key in (
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            "AIRFLOW__CELERY__RESULT_BACKEND",
            "LIFELONG_LABELS_URL",
        ):
            assert urlsplit(values[key]).hostname == "postgres", f"{name}: {key}"
        assert urlsplit(values["AIRFLOW__CELERY__BROKER_URL"]).hostname == "redis", name
        for key in ("LIFELONG_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL"):
            assert urlsplit(values[key]).hostname == "minio", f"{name}: {key}"
        # SQLAlchemy 2 + psycopg 3, the driver the project installs (no psycopg2 in the image).
        assert values["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://")
        assert values["LIFELONG_LABELS_URL"].startswith("postgresql+psycopg://")


def test_depends_on_names_real_services(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        for dependency in svc.get("depends_on", {}) or {}:
            assert dependency in services, f"{name} depends on unknown service {dependency!r}"


def test_dags_folder_is_mounted(services: dict[str, Any]) -> None:
    for name, svc in airflow_services(services).items():
        mounts = [str(v).split(":") for v in svc.get("volumes", [])]
        dags = [m for m in mounts if len(m) >= 2 and m[1] == "/opt/airflow/dags"]
        assert dags, f"{name} does not mount the DAGs at /opt/airflow/dags"
        assert (INFRA / dags[0][0]).resolve() == REPO / "dags"


# --------------------------------------------------------------------------------------------------------
# docker-compose.yml and .env.example: variables and secrets
# --------------------------------------------------------------------------------------------------------
def compose_references() -> dict[str, set[str]]:
    """``{variable: {file names}}`` for every ${VAR...} in the two compose files' values."""
    refs: dict[str, set[str]] = {}
    for path in (COMPOSE, COMPOSE_CPU):
        for text in iter_strings(load_yaml(path)):
            for piece in text.split("$$"):
                for match in VAR_REF.finditer(piece):
                    refs.setdefault(match["name"], set()).add(path.name)
    return refs


def test_every_compose_variable_is_in_env_example(env_example: dict[str, str]) -> None:
    missing = {name: sorted(files) for name, files in compose_references().items() if name not in env_example}
    assert not missing, f"declare these in infra/.env.example: {missing}"


def test_env_example_has_no_stale_variables(env_example: dict[str, str]) -> None:
    unused = sorted(set(env_example) - set(compose_references()))
    assert not unused, f"infra/.env.example declares variables no compose file uses: {unused}"


def test_compose_uses_braced_references_only() -> None:
    # `$VAR` (unbraced) would escape the checks above; `$$` is the literal dollar for container shells.
    for path in (COMPOSE, COMPOSE_CPU):
        for text in iter_strings(load_yaml(path)):
            rest = VAR_REF.sub("", text.replace("$$", ""))
            assert "$" not in rest, f"{path.name}: unbraced variable in {text!r}"


def test_no_literal_secrets_in_compose(services: dict[str, Any], compose: dict[str, Any]) -> None:
    for name, svc in {**services, "x-airflow-common": compose["x-airflow-common"]}.items():
        for key, value in as_environment(svc).items():
            if SECRET_KEY.search(key):
                assert REQUIRED_REF.fullmatch(value), (
                    f"{name}.{key} must be a required ${{VAR:?...}} from .env, not {value!r}"
                )
    for text in iter_strings(load_yaml(COMPOSE)):
        for match in URL_PASSWORD.finditer(text):
            assert REQUIRED_REF.fullmatch(match["password"]), f"literal password in URL {text!r}"
        for match in re.finditer(r"--password\s+(\S+)", text):
            assert match.group(1).strip('"').startswith("$"), f"literal --password in {text!r}"


def test_env_example_ships_no_secret(env_example: dict[str, str]) -> None:
    for name, value in env_example.items():
        if SECRET_KEY.search(name) and name != "AWS_ACCESS_KEY_ID":  # an access key id is a user name
            assert value == "", f".env.example must leave {name} empty (make_env.py fills it)"


def test_compose_refuses_to_start_without_secrets(env_example: dict[str, str]) -> None:
    common = as_environment(load_yaml(COMPOSE)["x-airflow-common"])
    with pytest.raises(InterpolationError, match="set in .env"):
        interpolate(common["AIRFLOW__CORE__FERNET_KEY"], env_example)


# --------------------------------------------------------------------------------------------------------
# LIFELONG_* names are Settings fields; their values validate
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [COMPOSE, COMPOSE_CPU, ENV_EXAMPLE, HELM_VALUES, DOCKERFILE, INFRA_README],
    ids=lambda p: p.name,
)
def test_lifelong_variables_are_settings_fields(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path.name} not written yet")
    known = settings_env_names()
    used = set(LIFELONG_NAME.findall(path.read_text(encoding="utf-8")))
    unknown = {name: difflib.get_close_matches(name, known, n=1) for name in sorted(used - known)}
    assert not unknown, f"{path.name}: not fields of lifelong.settings.Settings (did you mean?): {unknown}"


def _settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in list(os.environ):
        if name.startswith(Settings.model_config.get("env_prefix", "LIFELONG_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_compose_settings_validate(services: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    env = filled_env()
    workers = [s for s in services.values() if worker_queues(s) == [constants.QUEUE_UNLEARNING]]
    assert len(workers) == 1, f"expected one worker on queue {constants.QUEUE_UNLEARNING!r} alone"
    worker = workers[0]
    values = {k: interpolate(v, env) for k, v in as_environment(worker).items()}
    settings = _settings_from(values, monkeypatch)
    assert settings.resolved_lake_url == "s3://lifelong-telemetry/lake"
    assert settings.resolved_registry_url == "s3://lifelong-models/lifelong"
    assert settings.resolved_labels_url == (
        f"postgresql+psycopg://lifelong:{env['LABELS_DB_PASSWORD']}@postgres:5432/lifelong_labels"
    )
    assert settings.s3_endpoint_url == "http://minio:9000"
    assert settings.scoring_schedule == "0 * * * *"
    assert settings.unlearning_schedule == "0 2 * * *"
    # No step cap: each detector kind keeps its measured budget.
    assert (settings.min_errors, settings.max_steps, settings.max_samples) == (5, None, 2000)
    assert settings.gate_min_fix_rate == pytest.approx(0.8)
    assert settings.device == "cuda"


def test_helm_settings_validate(helm: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    env = {item["name"]: item["value"] for item in helm["env"]}
    settings = _settings_from(env, monkeypatch)
    assert settings.resolved_lake_url.startswith("s3://")
    assert settings.resolved_registry_url.startswith("s3://")
    assert settings.stream_kind in ("events", "vectors")


# --------------------------------------------------------------------------------------------------------
# Pools, queues, buckets, databases: the names the code uses are the names infra creates
# --------------------------------------------------------------------------------------------------------
def test_init_creates_the_unlearning_pool(services: dict[str, Any]) -> None:
    pools = pools_created(command_text(services["airflow-init"]))
    assert pools == {constants.POOL_UNLEARNING: "1"}, pools
    assert "airflow db migrate" in command_text(services["airflow-init"])


def test_default_queue_matches_constants(services: dict[str, Any], helm: dict[str, Any]) -> None:
    for name, svc in airflow_services(services).items():
        assert as_environment(svc)["AIRFLOW__OPERATORS__DEFAULT_QUEUE"] == constants.QUEUE_DEFAULT, name
    assert helm["config"]["operators"]["default_queue"] == constants.QUEUE_DEFAULT


def test_pool_command_works_with_airflow_cli(services: dict[str, Any], tmp_path: Path) -> None:
    """Run the init service's exact `airflow pools set` line against a throwaway SQLite metadata DB."""
    airflow = Path(sys.executable).with_name("airflow")
    if not airflow.exists():
        pytest.skip("airflow CLI not installed next to this Python")
    script = command_text(services["airflow-init"])
    line = next(ln.strip() for ln in script.splitlines() if ln.strip().startswith("airflow pools set"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env |= {
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
    }

    def run(argv: list[str]) -> str:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"{shlex.join(argv)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    run([str(airflow), "db", "migrate"])
    words = shlex.split(line)
    run([str(airflow), *words[1:]])
    run([str(airflow), *words[1:]])  # idempotent: the init service runs on every `up`
    out = run([str(airflow), "pools", "get", constants.POOL_UNLEARNING, "-o", "json"])
    pool = yaml.safe_load(out[out.index("[") :])[0]
    assert (pool["pool"], int(pool["slots"])) == (constants.POOL_UNLEARNING, 1)


def test_minio_init_creates_the_buckets_of_the_urls(services: dict[str, Any]) -> None:
    init = services["minio-init"]
    assert str(init["image"]).startswith("minio/mc")
    script = command_text(init)
    env = as_environment(airflow_services(services)["airflow-scheduler"])
    lake = urlsplit(env["LIFELONG_LAKE_URL"]).netloc
    registry = urlsplit(env["LIFELONG_REGISTRY_URL"]).netloc
    assert (lake, registry) == ("lifelong-telemetry", "lifelong-models")
    for bucket in (lake, registry):
        assert re.search(rf"mc mb --ignore-existing local/{bucket}\b", script), bucket
    assert re.search(rf"mc version enable local/{registry}\b", script), "registry bucket must be versioned"
    # The key minio-init creates is the key Airflow uses.
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert as_environment(init)[key] == env[key]


def _init_sql_defaults() -> dict[str, str]:
    return dict(re.findall(r"\\set (\w+) (\w+)", INIT_SQL.read_text(encoding="utf-8")))


def test_postgres_init_matches_the_urls(services: dict[str, Any]) -> None:
    postgres = services["postgres"]
    assert any(
        str(v).startswith("./postgres/init.sql:/docker-entrypoint-initdb.d/") for v in postgres["volumes"]
    )
    defaults = _init_sql_defaults()
    raw = as_environment(airflow_services(services)["airflow-scheduler"])
    filled = filled_env()
    airflow_db = urlsplit(interpolate(raw["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], filled))
    labels_db = urlsplit(interpolate(raw["LIFELONG_LABELS_URL"], filled))
    assert (airflow_db.username, airflow_db.path) == (
        defaults["airflow_db_user"],
        f"/{defaults['airflow_db_name']}",
    )
    assert (labels_db.username, labels_db.path) == (
        defaults["labels_db_user"],
        f"/{defaults['labels_db_name']}",
    )
    # The password init.sql sets is the one the URLs carry.
    pg_env = as_environment(postgres)
    for key, url in (
        ("AIRFLOW_DB_PASSWORD", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"),
        ("LABELS_DB_PASSWORD", "LIFELONG_LABELS_URL"),
    ):
        assert VAR_REF.search(pg_env[key])["name"] == VAR_REF.search(raw[url])["name"], key


def _postgres_reachable() -> bool:
    try:
        import psycopg

        with psycopg.connect(host="127.0.0.1", user="postgres", dbname="test", connect_timeout=3):
            return True
    except Exception:
        return False


@pytest.mark.postgres
def test_postgres_init_sql_runs(tmp_path: Path) -> None:
    """Run init.sql twice on the real server under unique names; check ownership and isolation."""
    psql = shutil.which("psql")
    if psql is None or not _postgres_reachable():
        pytest.skip("psql or the PostgreSQL server on 127.0.0.1:5432 is not available")
    import psycopg

    suffix = uuid.uuid4().hex[:8]
    names = {
        "AIRFLOW_DB_USER": f"t_airflow_{suffix}",
        "AIRFLOW_DB_NAME": f"t_airflow_db_{suffix}",
        "LABELS_DB_USER": f"t_lifelong_{suffix}",
        "LABELS_DB_NAME": f"t_labels_db_{suffix}",
    }
    env = {**os.environ, **names, "AIRFLOW_DB_PASSWORD": "pw-a", "LABELS_DB_PASSWORD": "pw-l"}
    argv = [psql, "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-X", "-q", "-f", str(INIT_SQL)]
    admin = psycopg.connect(host="127.0.0.1", user="postgres", dbname="test", autocommit=True)
    try:
        for _ in range(2):  # idempotent
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
            assert done.returncode == 0, done.stderr
        owners = dict(
            admin.execute(
                "SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE datname = ANY(%s)",
                [[names["AIRFLOW_DB_NAME"], names["LABELS_DB_NAME"]]],
            ).fetchall()
        )
        assert owners == {
            names["AIRFLOW_DB_NAME"]: names["AIRFLOW_DB_USER"],
            names["LABELS_DB_NAME"]: names["LABELS_DB_USER"],
        }
        with psycopg.connect(
            host="127.0.0.1", user=names["LABELS_DB_USER"], dbname=names["LABELS_DB_NAME"], autocommit=True
        ) as labels:
            labels.execute("CREATE TABLE alembic_probe (id int)")  # what Alembic needs on first open
        with pytest.raises(psycopg.OperationalError, match="permission denied"):
            psycopg.connect(host="127.0.0.1", user=names["AIRFLOW_DB_USER"], dbname=names["LABELS_DB_NAME"])

        no_password = {k: v for k, v in env.items() if k != "LABELS_DB_PASSWORD"}
        done = subprocess.run(argv, env=no_password, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode != 0 and "LABELS_DB_PASSWORD is not set" in done.stderr
    finally:
        for db in (names["AIRFLOW_DB_NAME"], names["LABELS_DB_NAME"]):
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        for role in (names["AIRFLOW_DB_USER"], names["LABELS_DB_USER"]):
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.close()


# --------------------------------------------------------------------------------------------------------
# make_env.py
# --------------------------------------------------------------------------------------------------------
def test_make_env_fills_every_secret_once(tmp_path: Path, env_example: dict[str, str]) -> None:
    make_env = load_make_env()
    output = tmp_path / ".env"
    assert make_env.main(["--example", str(ENV_EXAMPLE), "--output", str(output)]) == 0
    first = output.read_text(encoding="utf-8")
    values = read_env_file(output)
    assert set(values) == set(env_example)
    secrets_ = [name for name, value in env_example.items() if value == ""]
    assert secrets_ and all(values[name] for name in secrets_)
    assert len({values[name] for name in secrets_}) == len(secrets_), "each secret must be distinct"
    assert stat.S_IMODE(output.stat().st_mode) == 0o600

    from cryptography.fernet import Fernet

    token = Fernet(values["AIRFLOW_FERNET_KEY"].encode()).encrypt(b"x")
    assert Fernet(values["AIRFLOW_FERNET_KEY"].encode()).decrypt(token) == b"x"

    # A second run never rotates secrets under a running deployment.
    assert make_env.main(["--example", str(ENV_EXAMPLE), "--output", str(output)]) == 0
    assert output.read_text(encoding="utf-8") == first

    # With it, every ${VAR:?...} in the compose files resolves.
    for path in (COMPOSE, COMPOSE_CPU):
        for text in iter_strings(load_yaml(path)):
            interpolate(text, values)


# --------------------------------------------------------------------------------------------------------
# Helm values
# --------------------------------------------------------------------------------------------------------
def test_helm_values_kubernetes_executor(helm: dict[str, Any]) -> None:
    assert helm["executor"] == "KubernetesExecutor"
    assert helm["postgresql"]["enabled"] is False
    assert helm["data"]["metadataSecretName"]
    assert helm["redis"]["enabled"] is False
    assert helm["dagProcessor"]["enabled"] is True
    for key in ("fernetKeySecretName", "apiSecretKeySecretName", "jwtSecretName"):
        assert helm.get(key), f"{key} must name an existing Secret"
    for key in ("fernetKey", "apiSecretKey", "jwtSecret", "webserverSecretKey"):
        assert helm.get(key) is None, f"{key} must not be set literally in values.yaml"
    logging_cfg = helm["config"]["logging"]
    assert logging_cfg["remote_logging"] == "True"
    assert logging_cfg["remote_base_log_folder"].startswith("s3://")
    assert helm["config"]["core"]["auth_manager"].startswith("airflow.providers.fab.")


def test_helm_env_and_secrets_are_well_formed(helm: dict[str, Any]) -> None:
    for item in helm["env"]:
        assert set(item) == {"name", "value"}, item
        assert isinstance(item["value"], str), f"{item['name']}: Kubernetes env values must be strings"
    for item in helm["secret"]:
        assert set(item) == {"envName", "secretName", "secretKey"}, item
    plain = {item["name"] for item in helm["env"]}
    from_secret = {item["envName"] for item in helm["secret"]}
    # The label-store URL carries a password: only ever from a Secret.
    assert "LIFELONG_LABELS_URL" in from_secret and "LIFELONG_LABELS_URL" not in plain
    env_from = yaml.safe_load(helm["extraEnvFrom"])
    assert all("secretRef" in item or "configMapRef" in item for item in env_from)
    for text in iter_strings(helm):
        assert not URL_PASSWORD.search(text), f"password in a URL in values.yaml: {text!r}"


def test_helm_migration_job_creates_the_pool(helm: dict[str, Any]) -> None:
    script = " ".join(helm["migrateDatabaseJob"]["args"])
    assert pools_created(script) == {constants.POOL_UNLEARNING: "1"}
    assert "airflow db migrate" in script


# --------------------------------------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------------------------------------
def test_dockerfile_installs_project_and_providers(services: dict[str, Any], helm: dict[str, Any]) -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\s*$", text, re.M)
    args = dict(re.findall(r"^ARG (\w+)=\"?([^\"\n]*)\"?$", text, re.M))
    pinned = re.search(r'"torch==([^"]+)"', (REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert pinned and args["TORCH_VERSION"] == pinned.group(1), "Dockerfile and pyproject pin different torch"
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert re.search(r'pip install "torch==\$\{TORCH_VERSION\}" --index-url "\$\{TORCH_INDEX_URL\}"', text)
    assert text.index("torch==${TORCH_VERSION}") < text.index("pip install . ")
    providers = set(args["AIRFLOW_PROVIDERS"].split())
    # Each executor / auth manager configured in infra needs its provider in the image.
    assert "apache-airflow-providers-celery" in providers
    assert "apache-airflow-providers-cncf-kubernetes" in providers
    assert "apache-airflow-providers-fab" in providers
    assert "apache-airflow-providers-amazon" in providers  # S3 remote logging
    assert re.search(r"^USER 50000$", text, re.M)
    build_args = set(load_yaml(COMPOSE)["x-airflow-common"]["build"]["args"])
    assert build_args <= set(args), (
        f"compose passes build args the Dockerfile lacks: {build_args - set(args)}"
    )


# --------------------------------------------------------------------------------------------------------
# dags/: pools and queues come from lifelong.constants and exist in infra
# --------------------------------------------------------------------------------------------------------
_UNRESOLVED = object()


def _module_names(tree: ast.Module) -> dict[str, Any]:
    """Names bound at module level to lifelong.constants values (or the module) or to string literals."""
    names: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "lifelong.constants":
            for alias in node.names:
                names[alias.asname or alias.name] = getattr(constants, alias.name, _UNRESOLVED)
        elif isinstance(node, ast.ImportFrom) and node.module == "lifelong":
            for alias in node.names:
                if alias.name == "constants":
                    names[alias.asname or alias.name] = constants
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "lifelong.constants" and alias.asname:
                    names[alias.asname] = constants
        elif (
            isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
        ):
            value = _resolve(node.value, names)
            if isinstance(value, str):
                names[node.targets[0].id] = value
    return names


def _resolve(node: ast.AST, names: dict[str, Any]) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return names.get(node.id, _UNRESOLVED)
    if isinstance(node, ast.Attribute):
        if isinstance(node.value, ast.Name) and names.get(node.value.id) is constants:
            return getattr(constants, node.attr, _UNRESOLVED)
        if ast.unparse(node.value) == "lifelong.constants":
            return getattr(constants, node.attr, _UNRESOLVED)
    return _UNRESOLVED


def _pool_queue_sites(tree: ast.Module) -> Iterator[tuple[int, dict[str, ast.AST]]]:
    """Each call or dict literal that sets ``pool`` and/or ``queue``, with its line."""
    for node in ast.walk(tree):
        found: dict[str, ast.AST] = {}
        if isinstance(node, ast.Call):
            found = {kw.arg: kw.value for kw in node.keywords if kw.arg in ("pool", "queue")}
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value in ("pool", "queue"):
                    found[key.value] = value
        if found:
            yield node.lineno, found


def check_dags(
    dag_files: list[Path], known_pools: set[str], known_queues: set[str]
) -> tuple[list[str], bool]:
    """Check every pool/queue a DAG file sets against what infra creates.

    Args:
        dag_files: DAG modules to read (parsed, never imported).
        known_pools: Pools that infra creates (plus Airflow's default_pool).
        known_queues: Queues some worker consumes.

    Returns:
        The problems found, one line each with file and line number, and whether some task sets
        ``pool=POOL_UNLEARNING`` together with ``queue=QUEUE_UNLEARNING``.
    """
    problems: list[str] = []
    unlearning_site = False
    for path in dag_files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        names = _module_names(tree)
        for line, found in _pool_queue_sites(tree):
            where = f"{path.name}:{line}"
            resolved = {key: _resolve(value, names) for key, value in found.items()}
            for key, value in resolved.items():
                if isinstance(found[key], ast.Constant):
                    problems.append(
                        f"{where}: {key}={value!r} is a literal; import it from lifelong.constants"
                    )
                elif value is _UNRESOLVED:
                    problems.append(f"{where}: cannot resolve {key}={ast.unparse(found[key])}")
                elif key == "pool" and value not in known_pools:
                    problems.append(
                        f"{where}: pool {value!r} is not created by infra ({sorted(known_pools)})"
                    )
                elif key == "queue" and value not in known_queues:
                    problems.append(f"{where}: no worker consumes queue {value!r} ({sorted(known_queues)})")
            pool, queue = resolved.get("pool"), resolved.get("queue")
            if pool == constants.POOL_UNLEARNING and queue == constants.QUEUE_UNLEARNING:
                unlearning_site = True
    return problems, unlearning_site


def _infra_pools_and_queues(services: dict[str, Any]) -> tuple[set[str], set[str]]:
    pools = set(pools_created(command_text(services["airflow-init"]))) | {"default_pool"}
    queues = {q for svc in celery_workers(services).values() for q in worker_queues(svc)}
    return pools, queues


def test_dag_checker_accepts_constants_and_flags_the_rest(services: dict[str, Any], tmp_path: Path) -> None:
    good = tmp_path / "good.py"
    good.write_text(
        "from lifelong.constants import POOL_UNLEARNING, QUEUE_UNLEARNING\n"
        "from lifelong import constants as c\n"
        "default_args = {'retries': 1, 'queue': c.QUEUE_DEFAULT}\n"
        "def unlearn(): ...\n"
        "task(pool=POOL_UNLEARNING, queue=QUEUE_UNLEARNING)(unlearn)\n",
        encoding="utf-8",
    )
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from lifelong.constants import QUEUE_UNLEARNING\n"
        "GPU = 'gpu'\n"
        "task(pool='lifelong_unlearning', queue=QUEUE_UNLEARNING)\n"
        "task(queue=GPU)\n"
        "task(pool=pick_pool())\n",
        encoding="utf-8",
    )
    pools, queues = _infra_pools_and_queues(services)
    assert check_dags([good], pools, queues) == ([], True)
    problems, site = check_dags([bad], pools, queues)
    assert [p.split(":", 2)[1] for p in problems] == ["3", "4", "5"], problems
    assert "is a literal" in problems[0]
    assert "no worker consumes queue 'gpu'" in problems[1]
    assert "cannot resolve pool=pick_pool()" in problems[2]
    assert site is True  # the literal still names the right pool; it is flagged above, not ignored
    plain = tmp_path / "plain.py"
    plain.write_text("from lifelong.constants import QUEUE_UNLEARNING\ntask(queue=QUEUE_UNLEARNING)\n")
    assert check_dags([plain], pools, queues) == ([], False)


def test_dags_use_infra_pools_and_queues(services: dict[str, Any]) -> None:
    dag_files = sorted((REPO / "dags").glob("*.py"))
    if not dag_files:
        pytest.skip("dags/ has no .py files yet")
    problems, unlearning_site = check_dags(dag_files, *_infra_pools_and_queues(services))
    assert not problems, "\n".join(problems)
    assert unlearning_site, "no DAG task sets pool=POOL_UNLEARNING together with queue=QUEUE_UNLEARNING"
