"""Checks behind scripts/check-deploy that need more than a shell (stdlib only, but for
PyYAML in ``kube-render``).

    deploy_checks.py dockerfile DOCKERFILE       assert the image's shape; print its recipe as JSON
    deploy_checks.py context DOCKERFILE SRC DST  copy what the builder stage COPYs into DST
                                                 (refusing sources that .dockerignore drops)
    deploy_checks.py compose DOCKERFILE          assert `docker-compose config --format json`
                                                 (read from stdin)
    deploy_checks.py guards COMPOSE_FILE         list the ${VAR:?} guarded variables
    deploy_checks.py key-commands COMPOSE_FILE   the documented key commands, one per
                                                 algorithm: ALGORITHM<TAB>key|secret<TAB>COMMAND
    deploy_checks.py passthrough COMPOSE_FILE[,OVERLAY...] DOC...
                                                 assert every AUTHSVC_* setting the docs name
                                                 is passed through by the compose file
    deploy_checks.py service-run SERVICE PG_URL REDIS_URL
                                                 from `config --format json` (stdin): the
                                                 service's environment as NAME=VALUE lines with
                                                 secrets, database and Redis mapped to the host,
                                                 then a line "--", then its command and
                                                 healthcheck as JSON
    deploy_checks.py kube-render KUBECTL SRC OUT render every Kubernetes overlay under SRC
                                                 (deploy/kubernetes) with `KUBECTL kustomize`
                                                 into OUT/<overlay>.yaml, from a copy of SRC
                                                 given throwaway secrets; print the overlays
    deploy_checks.py kube-stage SRC DST          that copy, with throwaway secrets, into DST
    deploy_checks.py kube-secrets SRC            list the secret files the overlays read

The recipe (the builder's RUN lines, ENV, WORKDIR, the CMD and the HEALTHCHECK) is what
check-deploy then executes on the host, so the checks follow the Dockerfile rather than a copy
of it.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

UID = 10001
DATA_DIR = "/var/lib/authsvc"
RUNTIME_BASE = "python:3.11-slim"
HEALTH_PATH = "/healthz"


class CheckError(Exception):
    pass


def expect(condition: object, message: str) -> None:
    if not condition:
        raise CheckError(message)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None


def logical_lines(text: str) -> list[str]:
    """Instructions with continuations joined; comment lines dropped (inside continuations too)."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1].rstrip() + " "
            continue
        current += stripped
        if current.strip():
            lines.append(current.strip())
        current = ""
    expect(not current.strip(), "the Dockerfile ends inside a line continuation")
    return lines


def parse_env(args: str) -> dict[str, str]:
    words = shlex.split(args)
    if len(words) >= 2 and "=" not in words[0]:  # legacy `ENV KEY value`
        return {words[0]: " ".join(words[1:])}
    return dict(word.split("=", 1) for word in words)


def parse(path: Path) -> list[Stage]:
    args_before_from: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(path.read_text()):
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "ARG" and not stages:
            name, _, default = args.partition("=")
            args_before_from[name] = default
        elif keyword == "FROM":
            words = args.split()
            words = [w for w in words if not w.startswith("--platform")]
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args_before_from.get(m[1], m[0]), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        else:
            expect(stages, f"{keyword} before the first FROM")
            stages[-1].instructions.append((keyword, args))
    return stages


def exec_form(args: str, what: str) -> list[str]:
    try:
        argv = json.loads(args)
    except json.JSONDecodeError:
        argv = None
    expect(
        isinstance(argv, list) and all(isinstance(a, str) for a in argv),
        f"{what} must be in exec form (a JSON array), so SIGTERM reaches the service, not a shell",
    )
    return argv  # type: ignore[no-any-return]


def dockerfile_recipe(path: Path) -> dict[str, Any]:
    stages = parse(path)
    expect(len(stages) >= 2, "the Dockerfile must be multi-stage (a builder and a runtime stage)")
    builder, runtime = stages[0], stages[-1]
    expect(builder.name == "builder", "the first stage must be named `builder`")
    expect(runtime.base == RUNTIME_BASE, f"the runtime stage must start FROM {RUNTIME_BASE}")

    runs = builder.all("RUN")
    joined = " ".join(runs)
    expect(re.search(r'pip"?\s+wheel\b|-m build\b', joined), "the builder must build a wheel")
    installs = [
        c for c in re.split(r"&&|;|\n", joined) if re.search(r"pip\"?\s+install\b.*\.whl", c)
    ]
    expect(installs, "the builder must pip install the built wheel")
    expect(
        all("-c constraints.txt" in c for c in installs),
        "the builder must install the wheel with -c constraints.txt",
    )

    # The runtime stage receives only the venv, never the source tree.
    copies = runtime.all("COPY") + runtime.all("ADD")
    expect(copies, "the runtime stage copies nothing from the builder")
    venv_paths = set()
    for copy in copies:
        words = copy.split()
        expect("--from=builder" in words, f"runtime COPY not from the builder: COPY {copy}")
        sources = [w for w in words if not w.startswith("--")][:-1]
        venv_paths.update(sources)
    builder_env: dict[str, str] = {}
    for env in builder.all("ENV"):
        builder_env.update(parse_env(env))
    expect(
        venv_paths == {builder_env.get("VENV")},
        f"the runtime stage must copy only the venv ({builder_env.get('VENV')}), not {venv_paths}",
    )

    user = runtime.last("USER")
    expect(user is not None, "the runtime stage must set USER")
    uid = (user or "").split(":")[0]
    expect(uid == str(UID), f"USER must be the fixed numeric UID {UID} (got {user!r})")
    expect(f"--uid {UID}" in " ".join(runtime.all("RUN")), f"the runtime must create UID {UID}")

    runtime_env: dict[str, str] = {}
    for env in runtime.all("ENV"):
        runtime_env.update(parse_env(env))
    expect(runtime_env.get("AUTHSVC_DATA_DIR") == DATA_DIR, f"AUTHSVC_DATA_DIR must be {DATA_DIR}")
    volumes = " ".join(runtime.all("VOLUME"))
    expect(DATA_DIR in volumes, f"{DATA_DIR} (the data dir) must be a VOLUME")
    expect("8000" in " ".join(runtime.all("EXPOSE")).split(), "EXPOSE 8000 is missing")
    expect(runtime.last("STOPSIGNAL") == "SIGTERM", "STOPSIGNAL SIGTERM is missing")

    health = runtime.last("HEALTHCHECK")
    probe = re.search(r"(?:^|\s)CMD\s+(.*)$", health or "")
    expect(probe, "HEALTHCHECK ... CMD is missing")
    health_cmd = exec_form(probe[1] if probe else "", "HEALTHCHECK CMD")
    text = " ".join(health_cmd)
    expect(HEALTH_PATH in text, f"the HEALTHCHECK must probe {HEALTH_PATH}")
    expect(not re.search(r"\b(curl|wget)\b", text), "the HEALTHCHECK must not need curl or wget")

    cmd = exec_form(runtime.last("CMD") or "", "CMD")
    expect(cmd[:2] == ["authsvc", "serve"], "CMD must run `authsvc serve`")
    expect(
        "--host" in cmd and cmd[cmd.index("--host") + 1] == "0.0.0.0",  # noqa: S104
        "CMD must bind 0.0.0.0",
    )
    expect(runtime.last("ENTRYPOINT") is None, "an ENTRYPOINT would change what CMD runs")

    copies_in = []
    for copy in builder.all("COPY"):
        words = [w for w in copy.split() if not w.startswith("--")]
        copies_in.append({"sources": words[:-1], "dest": words[-1]})
    return {
        "builder_env": builder_env,
        "builder_workdir": builder.last("WORKDIR") or "/",
        "builder_copies": copies_in,
        "builder_runs": runs,
        "runtime_env": runtime_env,
        "healthcheck": health_cmd,
        "cmd": cmd,
    }


IGNORED = ("__pycache__", "*.pyc", "*.pyo", "*.egg-info", ".venv*", ".env")


def dockerignored(name: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps a top-level path out of the context (last match wins)."""
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if fnmatch.fnmatch(name, pattern.removeprefix("!").strip("/")):
            excluded = not negated
    return excluded


def stage_context(dockerfile: Path, source: Path, dest: Path) -> None:
    """Lay out the builder's WORKDIR as its COPY lines would (relative destinations only)."""
    recipe = dockerfile_recipe(dockerfile)
    ignore_file = source / ".dockerignore"
    patterns = [
        line.strip()
        for line in (ignore_file.read_text().splitlines() if ignore_file.exists() else [])
        if line.strip() and not line.lstrip().startswith("#")
    ]
    for copy in recipe["builder_copies"]:
        target = dest / copy["dest"]
        expect(not copy["dest"].startswith("/"), "builder COPY destinations must be relative")
        for name in copy["sources"]:
            origin = source / name
            expect(origin.exists(), f"COPY source {name} does not exist")
            expect(not dockerignored(name, patterns), f"COPY source {name} is in .dockerignore")
            to = target / origin.name if copy["dest"].endswith("/") else target
            if origin.is_dir():
                shutil.copytree(origin, to, ignore=shutil.ignore_patterns(*IGNORED))
            else:
                to.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, to)


def compose_assertions(config: dict[str, Any], dockerfile: Path) -> None:
    recipe = dockerfile_recipe(dockerfile)
    services = config.get("services", {})
    for name in ("postgres", "redis", "migrate", "api"):
        expect(name in services, f"compose: service {name!r} is missing")
    pg, redis, migrate, api = (services[n] for n in ("postgres", "redis", "migrate", "api"))

    expect(str(pg.get("image", "")).startswith("postgres:15"), "compose: postgres must be 15")
    expect(
        "pg_isready" in " ".join(pg.get("healthcheck", {}).get("test", [])),
        "compose: postgres needs a pg_isready healthcheck",
    )
    expect(redis.get("healthcheck", {}).get("test"), "compose: redis needs a healthcheck")

    expect(
        migrate.get("command") == ["authsvc", "migrate"],
        "compose: migrate must run `authsvc migrate`",
    )
    expect(migrate.get("restart", "no") == "no", 'compose: migrate is one-shot (restart: "no")')
    expect(
        migrate.get("depends_on", {}).get("postgres", {}).get("condition") == "service_healthy",
        "compose: migrate must wait for a healthy postgres",
    )

    wanted = {
        "postgres": "service_healthy",
        "redis": "service_healthy",
        "migrate": "service_completed_successfully",
    }
    deps = api.get("depends_on", {})
    for dep, condition in wanted.items():
        expect(
            deps.get(dep, {}).get("condition") == condition,
            f"compose: api must depend on {dep} with condition {condition}",
        )
    expect(api.get("stop_signal", "SIGTERM") == "SIGTERM", "compose: api must stop with SIGTERM")
    expect(
        8000 in [p.get("target") for p in api.get("ports", [])], "compose: api must publish 8000"
    )

    data_dir = recipe["runtime_env"]["AUTHSVC_DATA_DIR"]
    for name, service in (("migrate", migrate), ("api", api)):
        env = service.get("environment", {})
        expect(
            env.get("AUTHSVC_ENV") == "production",
            f"compose: {name} must run AUTHSVC_ENV=production",
        )
        expect(
            str(env.get("AUTHSVC_DATABASE_URL", "")).startswith("postgresql+asyncpg://"),
            f"compose: {name} must use PostgreSQL",
        )
        expect(
            str(env.get("AUTHSVC_REDIS_URL", "")).startswith("redis://"),
            f"compose: {name} must set AUTHSVC_REDIS_URL",
        )
        targets = [s.get("target") for s in service.get("secrets", [])]
        expect(
            env.get("AUTHSVC_JWT_PRIVATE_KEY_FILE") in targets,
            f"compose: {name}'s AUTHSVC_JWT_PRIVATE_KEY_FILE must be a mounted secret",
        )
        mounts = [v.get("target") for v in service.get("volumes", []) if v.get("type") == "volume"]
        expect(data_dir in mounts, f"compose: {name} must mount a named volume on {data_dir}")
    expect(config.get("secrets", {}), "compose: the signing key must come from a secret")


# What compose sets itself for every container, or names only for tests.
_NOT_PASSED_THROUGH = {
    "AUTHSVC_ENV",
    "AUTHSVC_DATABASE_URL",
    "AUTHSVC_REDIS_URL",
    "AUTHSVC_DATA_DIR",
    "AUTHSVC_JWT_PRIVATE_KEY_FILE",
    "AUTHSVC_JWT_PREVIOUS_KEY_FILES",
}
_KEY_COMMAND = re.compile(r"^#\s+(key|secret) (ES256|EdDSA|RS256|HS256): (.+)$", re.MULTILINE)


def key_commands(compose_file: Path) -> list[tuple[str, str, str]]:
    """The documented key command of each algorithm, from the compose file's header."""
    found = [
        (alg, kind, cmd.strip())
        for kind, alg, cmd in _KEY_COMMAND.findall(compose_file.read_text())
    ]
    algorithms = sorted(alg for alg, _, _ in found)
    expect(
        algorithms == sorted(["ES256", "EdDSA", "RS256", "HS256"]),
        f"compose: one documented key command per algorithm, found {algorithms}",
    )
    return found


# Variables of the compose files themselves (not settings of the service).
_COMPOSE_OWN = {
    "AUTHSVC_IMAGE",
    "AUTHSVC_PORT",
    "AUTHSVC_JWT_PREVIOUS_KEY_FILE",
    "AUTHSVC_TLS_CERT_FILE",
    "AUTHSVC_TLS_KEY_FILE",
}


def passthrough(compose_files: list[Path], docs: list[Path]) -> list[str]:
    """Every ``AUTHSVC_*`` setting the docs name appears in the compose file (set, or passed
    through from the operator's environment); the compose files' own variables (the image,
    the port, the previous key, the TLS files) appear in one of them."""
    text = compose_files[0].read_text()
    every = "\n".join(f.read_text() for f in compose_files)
    named: set[str] = set()
    for doc in docs:
        if doc.is_file():
            # docs/configuration.md ends with the variables of the tools around the service
            # (tests, benchmark, compose's own): not settings, so not passed through.
            settings_text = doc.read_text().split("\n## Other variables", 1)[0]
            named |= set(re.findall(r"\bAUTHSVC_[A-Z0-9_]*[A-Z0-9]\b", settings_text))
    named = {n for n in named if not n.startswith("AUTHSVC_TEST_")}
    missing = sorted(
        n for n in named if not re.search(rf"\b{n}\b", every if n in _COMPOSE_OWN else text)
    )
    expect(not missing, f"compose: documented settings not passed through: {missing}")
    for name in sorted(named - _NOT_PASSED_THROUGH - _COMPOSE_OWN):
        expect(
            re.search(rf"^\s+{name}: \$\{{{name}:[-?]", text, re.MULTILINE) is not None
            or name == "AUTHSVC_JWT_ALGORITHM",
            f"compose: {name} must be passed through as ${{{name}:-...}}",
        )
    return sorted(named)


def service_run(config: dict[str, Any], service: str, pg_url: str, redis_url: str) -> str:
    """The service's environment with its container paths and hosts mapped to this host."""
    spec = config["services"][service]
    secrets = {name: top.get("file") for name, top in config.get("secrets", {}).items()}
    mapped = {
        s.get("target", f"/run/secrets/{s['source']}"): secrets[s["source"]]
        for s in spec.get("secrets", [])
    }
    lines = []
    for name, value in sorted((spec.get("environment") or {}).items()):
        value = "" if value is None else str(value)
        if name == "AUTHSVC_DATABASE_URL":
            expect("@postgres:5432/" in value, "compose: the database URL must name postgres")
            value = pg_url
        elif name == "AUTHSVC_REDIS_URL":
            value = redis_url
        else:
            for target, source in mapped.items():
                value = value.replace(target, source)
        expect("\n" not in value, f"compose: {name} spans lines")
        lines.append(f"{name}={value}")
    for target in [c for c in spec.get("command", []) if c.startswith("/run/secrets/")]:
        expect(target in mapped, f"compose: {service}'s command names {target}, not a secret of it")
    command = [mapped.get(c, c) for c in spec.get("command", [])]
    health = (spec.get("healthcheck") or {}).get("test") or []
    return "\n".join([*lines, "--", json.dumps(command), json.dumps(health)])


def guarded_variables(compose_file: Path) -> list[str]:
    return sorted(set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?", compose_file.read_text())))


# -- Kubernetes (deploy/kubernetes) ------------------------------------------------------------

# Rendered besides the overlays: production with the ServiceMonitor component added, the way
# docs/deployment.md tells operators to add it.
WITH_COMPONENT = {"production-servicemonitor": ("production", "../../components/servicemonitor")}


OPENSSL_EC_KEY = ["openssl", "genpkey", "-algorithm", "EC"]
OPENSSL_EC_KEY += ["-pkeyopt", "ec_paramgen_curve:P-256", "-out"]


def kustomizations(root: Path) -> list[Path]:
    return sorted(root.rglob("kustomization.yaml"))


def secret_files(kustomization: Path) -> list[Path]:
    """The files a kustomization's secretGenerator reads (``files`` and ``envs``)."""
    import yaml  # only this subcommand needs it (kubernetes-validate and the tests bring it)

    spec = yaml.safe_load(kustomization.read_text()) or {}
    paths = []
    for generator in spec.get("secretGenerator", []):
        for entry in generator.get("files", []):
            paths.append(entry.split("=", 1)[-1])
        paths.extend(generator.get("envs", []))
    return [kustomization.parent / p for p in paths]


def stage_throwaway_secrets(root: Path) -> None:
    """Write the git-ignored secret files into a copy: PEM keys made now, the rest from their
    .example."""
    for kustomization in kustomizations(root):
        for path in secret_files(kustomization):
            if path.exists():
                continue
            example = path.with_name(path.name + ".example")
            if example.exists():
                shutil.copy(example, path)
            elif path.suffix == ".pem":
                argv = [*OPENSSL_EC_KEY, str(path)]
                subprocess.run(argv, check=True, capture_output=True)  # noqa: S603
            else:
                raise CheckError(f"{path} is read by {kustomization} and has no .example")


def _without_real_secrets(directory: str, names: list[str]) -> set[str]:
    """copytree's filter: never the operator's own secret files (only the .example ones)."""
    ignored = shutil.ignore_patterns(*IGNORED)(directory, names)
    if Path(directory).name == "secrets":
        ignored |= {n for n in names if not n.endswith(".example") and n != ".gitignore"}
    return ignored


def kube_stage(source: Path, tree: Path) -> list[str]:
    """Copy ``source`` to ``tree`` without real secrets, add the WITH_COMPONENT overlays, write
    throwaway secrets; the overlays' names."""
    shutil.copytree(source, tree, ignore=_without_real_secrets)
    overlays = tree / "overlays"
    for name, (base, component) in WITH_COMPONENT.items():
        shutil.copytree(overlays / base, overlays / name)
        with (overlays / name / "kustomization.yaml").open("a") as fh:
            fh.write(f"components:\n  - {component}\n")
    stage_throwaway_secrets(tree)
    names = sorted(p.name for p in overlays.iterdir() if (p / "kustomization.yaml").exists())
    expect(names, f"no overlays under {source / 'overlays'}")
    return names


def kube_render(kubectl: str, source: Path, out: Path) -> list[str]:
    """Render each overlay (and WITH_COMPONENT) from a staged copy of ``source``."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="authsvc-kube-") as scratch:
        tree = Path(scratch) / "kubernetes"
        names = kube_stage(source, tree)
        for name in names:
            done = subprocess.run(  # noqa: S603 - the pinned kubectl
                [kubectl, "kustomize", str(tree / "overlays" / name)],
                capture_output=True,
                text=True,
            )
            expect(done.returncode == 0, f"kubectl kustomize {name}: {done.stderr.strip()}")
            (out / f"{name}.yaml").write_text(done.stdout)
    return names


def main(argv: list[str]) -> int:
    try:
        match argv:
            case ["dockerfile", dockerfile]:
                print(json.dumps(dockerfile_recipe(Path(dockerfile))))
            case ["context", dockerfile, source, dest]:
                stage_context(Path(dockerfile), Path(source), Path(dest))
            case ["compose", dockerfile]:
                compose_assertions(json.load(sys.stdin), Path(dockerfile))
            case ["guards", compose_file]:
                print("\n".join(guarded_variables(Path(compose_file))))
            case ["key-commands", compose_file]:
                for alg, kind, cmd in key_commands(Path(compose_file)):
                    print(f"{alg}\t{kind}\t{cmd}")
            case ["passthrough", compose_files, *docs]:
                files = [Path(f) for f in compose_files.split(",")]
                print(" ".join(passthrough(files, [Path(d) for d in docs])))
            case ["service-run", service, pg_url, redis_url]:
                print(service_run(json.load(sys.stdin), service, pg_url, redis_url))
            case ["kube-render", kubectl, source, out]:
                print("\n".join(kube_render(kubectl, Path(source), Path(out))))
            case ["kube-stage", source, tree]:
                print("\n".join(kube_stage(Path(source), Path(tree))))
            case ["kube-secrets", source]:
                root = Path(source)
                files = {p for k in kustomizations(root) for p in secret_files(k)}
                print("\n".join(str(p.relative_to(root)) for p in sorted(files)))
            case _:
                print(__doc__, file=sys.stderr)
                return 2
    except CheckError as exc:
        print(f"check-deploy: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
