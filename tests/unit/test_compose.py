"""Static checks of the production stack: docker-compose.temporal.yml, Dockerfile, .dockerignore.

No Docker needed. What a typo in these files would otherwise only show at `docker compose up`
on someone's server: an unpinned image, a dependency that does not wait for health, a search
attribute missing or of the wrong type, a `command:` that `qt` does not accept.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import typer.main
import yaml

from common.search_attributes import SEARCH_ATTRIBUTES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.temporal.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
# Must have a healthcheck of their own (the rest of the stack waits on them).
MUST_BE_HEALTHCHECKED = {"postgres", "temporal", "redis", "api", "paper-exchange"}
# Custom search attribute columns PostgreSQL (SQL) visibility pre-allocates per namespace
# (schema/postgresql/v12/visibility/schema.sql: Keyword01..10, Double01..03, ...).
SQL_VISIBILITY_SLOTS = {"Keyword": 10, "Double": 3, "Int": 3, "Bool": 3, "Datetime": 3, "Text": 3, "KeywordList": 3}
# Fallback only: the queue names come from common.task_queues (what `qt worker` itself accepts).
FALLBACK_QUEUES = {"trade-workflows", "trade-execution", "trade-monitor", "trade-market", "all"}


def _load_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


COMPOSE = _load_compose()
SERVICES: dict[str, dict] = COMPOSE["services"]
APP_SERVICES = sorted(name for name, svc in SERVICES.items() if "build" in svc)
# One-shot jobs: they exit, and whoever needs them waits for service_completed_successfully.
ONE_SHOT = sorted(
    name for name, svc in SERVICES.items() if str(svc.get("restart", "no")).split(":")[0] in {"no", "on-failure"}
)
LONG_RUNNING = sorted(set(SERVICES) - set(ONE_SHOT))


def _image_tag(image: str) -> tuple[str, str | None]:
    """'temporalio/server:1.32.0' -> ('temporalio/server', '1.32.0'); no tag -> (image, None)."""
    image = image.split("@", 1)[0]
    name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:  # a registry port, not a tag
        return image, None
    return name, tag


def _depends_on(svc: dict) -> dict:
    return svc.get("depends_on") or {}


def _env(svc: dict) -> dict:
    env = svc.get("environment") or {}
    assert isinstance(env, dict), "write environment as a mapping so the x-app-env anchor can merge"
    return env


def _queues_qt_accepts() -> set[str]:
    try:
        from common.task_queues import ALL, QUEUES
    except ImportError:  # the worker package moved: fall back to the list in the brief
        return FALLBACK_QUEUES
    return {*QUEUES, ALL}


# --- structure -----------------------------------------------------------------------------------


def test_compose_has_the_whole_stack():
    expected = {
        "postgres", "temporal-schema", "temporal", "temporal-namespace", "temporal-ui", "redis",
        "worker-workflows", "worker-execution", "worker-monitor", "worker-market",
        "ingest", "api", "paper-exchange",
    }  # fmt: skip
    missing = expected - set(SERVICES)
    assert not missing, f"services missing from {COMPOSE_FILE.name}: {sorted(missing)}"
    assert set(ONE_SHOT) == {"temporal-schema", "temporal-namespace"}, ONE_SHOT


def test_every_image_is_pinned_or_built_here():
    for name, svc in SERVICES.items():
        if "build" in svc:
            context = svc["build"] if isinstance(svc["build"], str) else svc["build"].get("context", ".")
            assert (ROOT / context / "Dockerfile").is_file(), f"{name}: builds from {context} without a Dockerfile"
            continue
        image = svc.get("image")
        assert image, f"{name}: neither image nor build"
        assert "${" not in image, f"{name}: image {image!r} depends on the environment"
        repo, tag = _image_tag(image)
        assert tag is not None, f"{name}: image {image!r} has no tag"
        assert tag != "latest", f"{name}: image {image!r} uses :latest"
        assert re.match(r"^v?\d+\.\d+", tag), f"{name}: tag of {image!r} is not a MAJOR.MINOR[.PATCH] pin"


def test_temporal_images_match_server_1_32_and_auto_setup_is_not_used():
    for name, svc in SERVICES.items():
        assert "temporalio/auto-setup" not in str(svc.get("image", "")), f"{name}: auto-setup is deprecated"
    _, server_tag = _image_tag(SERVICES["temporal"]["image"])
    assert SERVICES["temporal"]["image"].startswith("temporalio/server:")
    assert server_tag.startswith("1.32"), server_tag
    # The schema files the migrations apply ship in admin-tools: same release as the server.
    for name in ONE_SHOT:
        repo, tag = _image_tag(SERVICES[name]["image"])
        assert repo == "temporalio/admin-tools", f"{name}: {repo}"
        assert tag.startswith("1.32"), f"{name}: admin-tools {tag} does not match server {server_tag}"
    _, ui_tag = _image_tag(SERVICES["temporal-ui"]["image"])
    assert ui_tag.startswith("2.54"), ui_tag


# --- health and start order ----------------------------------------------------------------------


def test_core_services_have_healthchecks():
    for name in MUST_BE_HEALTHCHECKED:
        check = SERVICES[name].get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name}: no healthcheck"
        assert check["test"][0] in {"CMD", "CMD-SHELL"}, f"{name}: healthcheck test must be CMD or CMD-SHELL"


def test_long_running_services_are_healthchecked_or_wait_for_ones_that_are():
    for name in LONG_RUNNING:
        svc = SERVICES[name]
        if svc.get("healthcheck"):
            continue
        deps = _depends_on(svc)
        assert deps, f"{name}: no healthcheck and depends on nothing"
        for dep, spec in deps.items():
            waits_healthy = spec["condition"] == "service_healthy" and SERVICES[dep].get("healthcheck")
            waits_done = spec["condition"] == "service_completed_successfully" and dep in ONE_SHOT
            assert waits_healthy or waits_done, f"{name}: waits on {dep} only until it has started"


def test_long_running_services_restart_unless_stopped():
    for name in LONG_RUNNING:
        assert SERVICES[name].get("restart") == "unless-stopped", f"{name}: restart {SERVICES[name].get('restart')!r}"


def test_depends_on_uses_the_long_form_with_a_sensible_condition():
    for name, svc in SERVICES.items():
        deps = _depends_on(svc)
        assert isinstance(deps, dict), f"{name}: depends_on must be a mapping with conditions, not a list"
        for dep, spec in deps.items():
            assert dep in SERVICES, f"{name}: depends on unknown service {dep}"
            assert isinstance(spec, dict) and spec.get("condition") in CONDITIONS, f"{name} -> {dep}: {spec!r}"
            condition = spec["condition"]
            if dep in ONE_SHOT:
                assert condition == "service_completed_successfully", f"{name} -> one-shot {dep}: {condition}"
            else:
                assert condition != "service_completed_successfully", f"{name} -> long-running {dep}"
            if condition == "service_healthy":
                assert SERVICES[dep].get("healthcheck"), f"{name} waits for {dep} to be healthy; it has no healthcheck"


def test_setup_chain_postgres_schema_server_namespace_apps():
    def cond(svc: str, dep: str) -> str | None:
        return _depends_on(SERVICES[svc]).get(dep, {}).get("condition")

    assert cond("temporal-schema", "postgres") == "service_healthy"
    assert cond("temporal", "temporal-schema") == "service_completed_successfully"
    assert cond("temporal-namespace", "temporal") == "service_healthy"
    assert cond("temporal-ui", "temporal") == "service_healthy"
    for name in APP_SERVICES:
        assert cond(name, "temporal-namespace") == "service_completed_successfully", name
        assert cond(name, "redis") == "service_healthy", name


# --- Temporal set-up jobs ------------------------------------------------------------------------


def _mounted_script(service: str) -> Path:
    """The host file behind the script a one-shot admin-tools job runs."""
    svc = SERVICES[service]
    script = svc["command"][0]
    for volume in svc.get("volumes", []):
        host, container = volume.split(":")[:2]
        if script.startswith(container.rstrip("/") + "/"):
            return ROOT / host / script[len(container.rstrip("/")) + 1 :]
    raise AssertionError(f"{service}: {script} is not in a mounted directory")


def test_bind_mounts_point_at_files_in_the_repo():
    for name, svc in SERVICES.items():
        for volume in svc.get("volumes", []):
            host = volume.split(":")[0]
            if host.startswith("."):
                assert (ROOT / host).exists(), f"{name}: mounts {host}, which does not exist"


def test_dynamic_config_file_is_mounted_where_the_server_reads_it():
    env = _env(SERVICES["temporal"])
    assert env["DB"] == "postgres12"
    for key in ("DB_PORT", "POSTGRES_SEEDS", "POSTGRES_USER", "POSTGRES_PWD", "DYNAMIC_CONFIG_FILE_PATH"):
        assert env.get(key), f"temporal: {key} not set"
    # Relative paths resolve against the server image's working directory, /etc/temporal.
    in_container = Path("/etc/temporal") / env["DYNAMIC_CONFIG_FILE_PATH"]
    for volume in SERVICES["temporal"]["volumes"]:
        host, container = volume.split(":")[:2]
        if in_container.is_relative_to(container):
            on_host = ROOT / host / in_container.relative_to(container)
            assert on_host.is_file(), on_host
            assert isinstance(yaml.safe_load(on_host.read_text(encoding="utf-8")), dict)
            return
    raise AssertionError(f"{in_container} is not mounted into the temporal service")


def test_schema_job_migrates_both_databases_with_the_shipped_schemas():
    script = _mounted_script("temporal-schema").read_text(encoding="utf-8")
    assert "temporal-sql-tool" in script
    for step in ("create", "setup-schema", "update-schema"):
        assert step in script, step
    assert "/etc/temporal/schema/postgresql/v12" in script
    assert "temporal/versioned" in script and "visibility/versioned" in script
    env = _env(SERVICES["temporal-schema"])
    assert env["SQL_PLUGIN"] == "postgres12" and env["SQL_HOST"] == "postgres"


def _registered_search_attributes() -> dict[str, str]:
    args = SERVICES["temporal-namespace"]["command"][1:]
    pairs = [a.split("=", 1) for a in args]
    assert all(len(p) == 2 for p in pairs), f"temporal-namespace arguments must be NAME=Type: {args}"
    result = dict(pairs)
    assert len(result) == len(pairs), f"duplicate search attribute in {args}"
    return result


def test_namespace_job_registers_every_search_attribute_with_its_type():
    assert _registered_search_attributes() == SEARCH_ATTRIBUTES
    script = _mounted_script("temporal-namespace").read_text(encoding="utf-8")
    assert "temporal operator namespace create" in script
    assert "temporal operator search-attribute create" in script
    assert _env(SERVICES["temporal-namespace"])["TEMPORAL_NAMESPACE"] == "default"


def test_search_attributes_fit_the_sql_visibility_columns():
    counts: dict[str, int] = {}
    for kind in SEARCH_ATTRIBUTES.values():
        counts[kind] = counts.get(kind, 0) + 1
    for kind, count in counts.items():
        assert kind in SQL_VISIBILITY_SLOTS, f"unknown search attribute type {kind}"
        assert count <= SQL_VISIBILITY_SLOTS[kind], (
            f"{count} {kind} search attributes; PostgreSQL visibility has {SQL_VISIBILITY_SLOTS[kind]} per namespace"
        )


@pytest.mark.parametrize("script", sorted((ROOT / "deploy").rglob("*.sh")), ids=lambda p: p.name)
def test_deploy_scripts_are_valid_posix_sh(script: Path):
    # The admin-tools image is alpine: busybox sh, no bash. dash is the closest strict shell here.
    shell = shutil.which("dash") or shutil.which("sh")
    assert shell, "no POSIX shell to check the scripts with"
    result = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "bash" not in script.read_text(encoding="utf-8").splitlines()[0]


# --- app services --------------------------------------------------------------------------------


def test_app_services_share_one_image_and_the_qt_environment():
    assert APP_SERVICES, "no service builds the Dockerfile"
    images = {SERVICES[name].get("image") for name in APP_SERVICES}
    builds = {str(SERVICES[name]["build"]) for name in APP_SERVICES}
    assert len(images) == 1 and len(builds) == 1, (images, builds)
    for name in APP_SERVICES:
        env = _env(SERVICES[name])
        assert env.get("QT_TEMPORAL_ADDRESS") == "temporal:7233", name
        assert str(env.get("QT_TEMPORAL_EXTERNAL")).lower() == "true", name
        assert env.get("QT_REDIS_URL") == "redis://redis:6379/0", name
        assert env.get("QT_EXCHANGE_MODE") == "${QT_EXCHANGE_MODE:-paper}", name
        expected_paper_host = "0.0.0.0" if name == "paper-exchange" else "paper-exchange"
        assert env.get("QT_PAPER_HOST") == expected_paper_host, name
    api_env = _env(SERVICES["api"])
    assert api_env.get("QT_API_TOKEN", "").startswith("${QT_API_TOKEN:?"), "the API must refuse to start without a token"
    assert api_env.get("QT_API_HOST") == "0.0.0.0"


def test_app_healthchecks_probe_the_documented_endpoints():
    assert "/health" in " ".join(SERVICES["api"]["healthcheck"]["test"])
    assert "/fapi/v1/ping" in " ".join(SERVICES["paper-exchange"]["healthcheck"]["test"])


def _qt_group():
    """The click group behind `qt` (Typer 0.29 vendors its own click: no isinstance on click's)."""
    try:
        from qt.cli import app
    except ImportError as exc:  # reported as a failure, never skipped
        pytest.fail(f"qt.cli cannot be imported, so compose commands cannot be checked: {exc}")
    command = typer.main.get_command(app)
    assert hasattr(command, "get_command") and hasattr(command, "list_commands"), "qt is expected to be a command group"
    return command


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_command_is_a_real_qt_command(service: str):
    args = SERVICES[service].get("command")
    assert isinstance(args, list) and args, f"{service}: command must be a non-empty list of qt arguments"
    assert args[0] != "qt", f"{service}: the image's ENTRYPOINT is already qt; list only its arguments"
    group = _qt_group()
    parent = group.context_class(group, info_name="qt")
    sub = group.get_command(parent, args[0])
    assert sub is not None, f"{service}: `qt {args[0]}` is not a command (have: {', '.join(group.list_commands(parent))})"
    try:
        ctx = sub.make_context(args[0], list(args[1:]), parent=parent, resilient_parsing=False)
    except Exception as exc:  # click's UsageError/BadParameter, or Exit for e.g. --help
        reason = exc.format_message() if hasattr(exc, "format_message") else f"exits (code {getattr(exc, 'exit_code', exc)})"
        pytest.fail(f"{service}: `qt {' '.join(args)}` does not parse: {reason}")
    if "queue" in ctx.params:
        assert ctx.params["queue"] in _queues_qt_accepts(), f"{service}: unknown queue {ctx.params['queue']!r}"


def test_every_task_queue_has_a_worker_service():
    queues = set()
    for name in APP_SERVICES:
        args = SERVICES[name]["command"]
        if args[0] == "worker":
            queues.add(args[args.index("--queue") + 1])
    assert queues == _queues_qt_accepts() - {"all"}


# --- Dockerfile ----------------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and continuation lines joined."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def test_dockerfile_base_image_is_pinned():
    froms = [args.split()[0] for kw, args in _dockerfile_instructions() if kw == "FROM"]
    assert froms, "Dockerfile has no FROM"
    for image in froms:
        repo, tag = _image_tag(image)
        assert tag and tag != "latest" and re.match(r"^\d+\.\d+\.\d+", tag), f"base image {image} is not pinned"
    assert _image_tag(froms[-1])[0] == "python" and _image_tag(froms[-1])[1].startswith("3.11."), froms[-1]


def test_dockerfile_downloads_nothing_and_runs_as_non_root():
    instructions = _dockerfile_instructions()
    for kw, args in instructions:
        if kw in {"RUN", "ADD"}:
            assert not re.search(r"\b(curl|wget)\b", args), f"{kw} {args}"
        if kw == "ADD":
            assert "://" not in args, f"ADD fetches a URL: {args}"
    users = [args for kw, args in instructions if kw == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, users
    assert ("ENTRYPOINT", '["qt"]') in instructions
    runs = " ".join(args for kw, args in instructions if kw == "RUN")
    assert "pip install --no-cache-dir ." in runs


def test_dockerfile_copies_every_package_pyproject_installs():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set()
    for kw, args in _dockerfile_instructions():
        if kw == "COPY":
            copied.update(Path(src).name for src in args.split()[:-1] if not src.startswith("--"))
    assert {"pyproject.toml", "README.md"} <= copied
    assert packages <= copied, f"not copied into the image: {sorted(packages - copied)}"


def test_dockerignore_keeps_the_context_small():
    entries = {line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()}
    for required in (".venv", ".data", ".git", "tests", "benchmarks"):
        assert required in entries, f".dockerignore misses {required}"
    assert entries & {"__pycache__", "**/__pycache__"}, ".dockerignore misses __pycache__"


def test_the_image_carries_the_shipped_signal_model_and_points_the_engine_at_it():
    instructions = _dockerfile_instructions()
    copies = [args.split() for kw, args in instructions if kw == "COPY"]
    target = next((dst for *srcs, dst in copies if "models/signal_lgbm" in srcs), None)
    assert target, "the shipped model is not copied into the image (the engine would run the fallback rule)"
    envs = " ".join(args for kw, args in instructions if kw == "ENV")
    assert f"QT_SIGNAL_MODEL_PATH={target}/model.txt" in envs, envs
    assert (ROOT / "models" / "signal_lgbm" / "model.txt").is_file()
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert "models" not in ignored and "models/" not in ignored
