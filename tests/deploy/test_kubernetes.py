"""The Kubernetes manifests, offline: every kustomization builds, every built object
validates against the Kubernetes OpenAPI schemas (kubernetes-validate bundles them), custom
resources carry their required fields, and the operational promises hold (probes, drain,
security context, SSE-safe ingress, canary gates, backups)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]  # no py.typed marker
import pytest
import yaml
from scriptgen.cli._exit import EXIT_WAIT_SECONDS

from gateway import GatewayConfig, create_app
from server.app import AFTER_GRACE_SECONDS
from server.config import build_providers
from server.health import LIVENESS_SERVICE
from tests.deploy.manifests import (
    KUSTOMIZATIONS,
    Manifest,
    build,
    container,
    env,
    find,
    of_kind,
    pod_spec,
    workloads,
)
from tests.deploy.tools import ROOT, RULES, promtool, run

#: The oldest Kubernetes the manifests promise to work on, and the newest schemas bundled.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
CUSTOM_GROUPS = {"monitoring.coreos.com", "argoproj.io"}


@pytest.fixture(scope="module", params=sorted(KUSTOMIZATIONS))
def built(request: pytest.FixtureRequest) -> tuple[str, list[Manifest]]:
    name = str(request.param)
    return name, build(KUSTOMIZATIONS[name])


@pytest.fixture(scope="module")
def dev() -> list[Manifest]:
    return build(KUSTOMIZATIONS["dev"])


@pytest.fixture(scope="module")
def prod() -> list[Manifest]:
    return build(KUSTOMIZATIONS["prod"])


def _group(manifest: Manifest) -> str:
    api_version: str = manifest["apiVersion"]
    return api_version.split("/")[0] if "/" in api_version else ""


# --- schemas -------------------------------------------------------------------------


def test_every_builtin_object_validates_against_the_kubernetes_schemas(
    built: tuple[str, list[Manifest]],
) -> None:
    _, manifests = built
    assert manifests
    checked = 0
    for manifest in manifests:
        if _group(manifest) in CUSTOM_GROUPS:
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                name = f"{manifest['kind']}/{manifest['metadata']['name']}"
                pytest.fail(f"{name} on Kubernetes {version}: {error.message} at {error.path}")
        checked += 1
    assert checked >= 10


def _require(manifest: Manifest, *paths: str) -> None:
    name = f"{manifest['kind']}/{manifest['metadata']['name']}"
    for path in paths:
        node: Any = manifest
        for key in path.split("."):
            assert isinstance(node, dict) and key in node, f"{name} lacks {path}"
            node = node[key]
        assert node not in (None, "", [], {}), f"{name} has an empty {path}"


def _check_custom_resource(manifest: Manifest) -> None:
    """The fields the CRDs (prometheus-operator, Argo Rollouts) require, and their shapes."""
    kind = manifest["kind"]
    _require(manifest, "metadata.name", "spec")
    if kind == "ServiceMonitor":
        assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
        _require(manifest, "spec.selector", "spec.endpoints")
        for endpoint in manifest["spec"]["endpoints"]:
            assert "port" in endpoint or "targetPort" in endpoint
    elif kind == "PrometheusRule":
        assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
        _require(manifest, "spec.groups")
        for group in manifest["spec"]["groups"]:
            assert group["name"] and group["rules"]
            for rule in group["rules"]:
                assert ("alert" in rule) != ("record" in rule) and rule["expr"]
    elif kind == "Rollout":
        assert manifest["apiVersion"] == "argoproj.io/v1alpha1"
        _require(manifest, "spec.selector.matchLabels", "spec.strategy.canary.steps")
        assert "template" in manifest["spec"] or "workloadRef" in manifest["spec"]
        if "workloadRef" in manifest["spec"]:
            _require(
                manifest,
                "spec.workloadRef.apiVersion",
                "spec.workloadRef.kind",
                "spec.workloadRef.name",
            )
    elif kind == "AnalysisTemplate":
        assert manifest["apiVersion"] == "argoproj.io/v1alpha1"
        _require(manifest, "spec.metrics")
        for metric in manifest["spec"]["metrics"]:
            assert metric["name"] and metric["provider"]["prometheus"]["query"]
            assert metric["provider"]["prometheus"]["address"]
    else:
        pytest.fail(f"no check for custom resource {kind}")


def test_custom_resources_have_their_required_fields(built: tuple[str, list[Manifest]]) -> None:
    _, manifests = built
    custom = [m for m in manifests if _group(m) in CUSTOM_GROUPS]
    assert {m["kind"] for m in custom} >= {"ServiceMonitor", "PrometheusRule"}
    for manifest in custom:
        _check_custom_resource(manifest)


def _normalized(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rule groups with each expression's surrounding whitespace dropped."""
    return [
        {**group, "rules": [{**rule, "expr": rule["expr"].strip()} for rule in group["rules"]]}
        for group in groups
    ]


def test_the_prometheus_rule_is_the_rules_file_and_passes_promtool(
    prod: list[Manifest], tmp_path: Path
) -> None:
    rule = find(prod, "PrometheusRule", "scriptgen")
    assert _normalized(rule["spec"]["groups"]) == _normalized(
        yaml.safe_load(RULES.read_text())["groups"]
    )
    extracted = tmp_path / "rules.yml"
    extracted.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = run([promtool(), "check", "rules", str(extracted)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_monitoring_files_are_up_to_date() -> None:
    from deploy.render_monitoring import rendered

    for path, text in rendered().items():
        assert path.read_text() == text, f"{path.name} is stale: run deploy/render_monitoring.py"


# --- wiring ----------------------------------------------------------------------------


def test_services_select_pods_and_name_their_ports(built: tuple[str, list[Manifest]]) -> None:
    _, manifests = built
    templates = [
        (m["spec"]["template"]["metadata"]["labels"], pod_spec(m))
        for m in of_kind(manifests, "Deployment")
    ]
    for service in of_kind(manifests, "Service"):
        selector = service["spec"]["selector"]
        matching = [spec for labels, spec in templates if selector.items() <= labels.items()]
        assert matching, service["metadata"]["name"]
        port_names = {p["name"] for c in matching[0]["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names


def test_autoscalers_and_budgets_point_at_workloads(built: tuple[str, list[Manifest]]) -> None:
    _, manifests = built
    for autoscaler in of_kind(manifests, "HorizontalPodAutoscaler"):
        target = autoscaler["spec"]["scaleTargetRef"]
        find(manifests, target["kind"], target["name"])
        assert autoscaler["spec"]["maxReplicas"] >= autoscaler["spec"]["minReplicas"]
    pod_labels = [
        m["spec"]["template"]["metadata"]["labels"] for m in of_kind(manifests, "Deployment")
    ]
    for budget in of_kind(manifests, "PodDisruptionBudget"):
        selector = budget["spec"]["selector"]["matchLabels"]
        assert any(selector.items() <= labels.items() for labels in pod_labels)


def test_service_monitors_scrape_named_service_ports(built: tuple[str, list[Manifest]]) -> None:
    _, manifests = built
    for monitor in of_kind(manifests, "ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        services = [
            s
            for s in of_kind(manifests, "Service")
            if selector.items() <= s["metadata"]["labels"].items()
        ]
        assert services, monitor["metadata"]["name"]
        names = {port["name"] for port in services[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in names and endpoint["path"] == "/metrics"


def test_network_policies_deny_by_default(built: tuple[str, list[Manifest]]) -> None:
    _, manifests = built
    deny = find(manifests, "NetworkPolicy", "scriptgen-default-deny")
    assert deny["spec"]["podSelector"] == {} and "ingress" not in deny["spec"]
    core = find(manifests, "NetworkPolicy", "scriptgen-core")
    sources = [peer for rule in core["spec"]["ingress"] for peer in rule["from"]]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "scriptgen-gateway"}}} in (
        sources
    )


# --- the pods ----------------------------------------------------------------------------


def test_every_pod_runs_locked_down_with_resources(built: tuple[str, list[Manifest]]) -> None:
    _, manifests = built
    for workload in workloads(manifests):
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec["automountServiceAccountToken"] is False
        for each in spec["containers"]:
            context = each["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            resources = each["resources"]
            assert set(resources["requests"]) >= {"cpu", "memory"}
            assert set(resources["limits"]) >= {"cpu", "memory"}
            image = each["image"]
            assert ":" in image and not image.endswith(":latest"), image


def _seconds(value: Any) -> float:
    return float(value)


def test_core_has_native_grpc_probes_and_drains_within_its_grace(
    built: tuple[str, list[Manifest]],
) -> None:
    _, manifests = built
    core = find(manifests, "Deployment", "scriptgen-core")
    main = container(core, "core")
    assert main["args"] == ["server"]
    variables = env(main)
    assert variables["SCRIPTGEN_GRPC_ADDRESS"] == "0.0.0.0:50051"
    assert variables["SCRIPTGEN_METRICS_ADDRESS"] == "0.0.0.0:9464"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert main[probe]["grpc"]["port"] == 50051, probe
    # Readiness: service "" (the default), the core's overall health, NOT_SERVING while a
    # store is down and first on SIGTERM. Startup and liveness: the process answers, so a
    # store outage or a drain never restarts a core.
    assert main["readinessProbe"]["grpc"].get("service", "") == ""
    assert main["startupProbe"]["grpc"]["service"] == LIVENESS_SERVICE
    assert main["livenessProbe"]["grpc"]["service"] == LIVENESS_SERVICE
    pre_stop = main["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    # preStop, then the job drain, then the rest of the stop, each wait of it bounded: the
    # cancellation of the jobs left, the streams' last events, the parts' closing, and the
    # process's wait for its threads.
    grace = _seconds(variables["SCRIPTGEN_SHUTDOWN_GRACE_SECONDS"])
    needed = float(pre_stop[1]) + grace + AFTER_GRACE_SECONDS + EXIT_WAIT_SECONDS
    assert pod_spec(core)["terminationGracePeriodSeconds"] > needed


def test_gateway_is_probed_on_readyz_and_healthz_and_drains_within_its_grace(
    built: tuple[str, list[Manifest]],
) -> None:
    _, manifests = built
    gateway = find(manifests, "Deployment", "scriptgen-gateway")
    main = container(gateway, "gateway")
    assert main["args"] == ["gateway"]
    variables = env(main)
    assert variables["SCRIPTGEN_HTTP_ADDRESS"] == "0.0.0.0:8080"
    assert variables["SCRIPTGEN_CORE_TARGET"] == "dns:///scriptgen-core-headless:50051"
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    pre_stop = main["lifecycle"]["preStop"]["exec"]["command"]
    # preStop, the requests' drain and the wait for those cancelled then to end (each
    # SCRIPTGEN_DRAIN_SECONDS), then the process's wait for its threads.
    drain = _seconds(variables["SCRIPTGEN_DRAIN_SECONDS"])
    needed = float(pre_stop[1]) + 2 * drain + EXIT_WAIT_SECONDS
    assert pod_spec(gateway)["terminationGracePeriodSeconds"] > needed


def test_ingress_is_safe_for_server_sent_events(built: tuple[str, list[Manifest]]) -> None:
    _, manifests = built
    ingress = find(manifests, "Ingress", "scriptgen")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    paths = ingress["spec"]["rules"][0]["http"]["paths"]
    assert {path["backend"]["service"]["name"] for path in paths} == {"scriptgen-gateway"}


#: The gateway's routes for the cluster alone: the kubelet's probes and Prometheus' scrapes.
INTERNAL_ROUTES = {"/healthz", "/readyz", "/metrics"}


def _ingress_routes(paths: list[dict[str, Any]], path: str) -> bool:
    """Whether an Ingress with `paths` sends `path` on (Kubernetes' Exact and Prefix rules:
    a prefix matches whole path segments)."""
    for rule in paths:
        wanted = rule["path"]
        if rule["pathType"] == "Exact" and path == wanted:
            return True
        if rule["pathType"] == "Prefix":
            prefix = wanted.rstrip("/")
            if path == prefix or path.startswith(prefix + "/") or prefix == "":
                return True
    return False


def test_the_ingress_routes_every_public_gateway_path_and_no_internal_one(
    built: tuple[str, list[Manifest]],
) -> None:
    _, manifests = built
    paths = find(manifests, "Ingress", "scriptgen")["spec"]["rules"][0]["http"]["paths"]
    app = create_app(GatewayConfig())
    # Each route's path with its variables filled in, e.g. /v1/projects/p1/episodes/e1.
    routes = {
        re.sub(r"\{[^}]+\}", "x1", route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }
    assert routes >= INTERNAL_ROUTES
    for path in sorted(routes):
        assert _ingress_routes(paths, path) == (path not in INTERNAL_ROUTES), path


# --- overlays ----------------------------------------------------------------------------


def test_dev_runs_one_replica_each_on_embedded_stores(dev: list[Manifest]) -> None:
    assert of_kind(dev, "HorizontalPodAutoscaler") == []
    assert of_kind(dev, "Rollout") == []
    for name in ("scriptgen-core", "scriptgen-gateway"):
        assert find(dev, "Deployment", name)["spec"]["replicas"] == 1
    core = find(dev, "Deployment", "scriptgen-core")
    assert core["spec"]["strategy"]["type"] == "Recreate"
    variables = env(container(core, "core"))
    assert "SCRIPTGEN_DATABASE_URL" not in variables and "SCRIPTGEN_REDIS_URL" not in variables
    assert {m["metadata"]["namespace"] for m in dev if m["kind"] != "Namespace"} == {
        "scriptgen-dev"
    }


def test_prod_shares_stores_and_runs_several_replicas(prod: list[Manifest]) -> None:
    core = container(find(prod, "Deployment", "scriptgen-core"), "core")
    variables = env(core)
    for name, key in (
        ("SCRIPTGEN_DATABASE_URL", "database-url"),
        ("SCRIPTGEN_REDIS_URL", "redis-url"),
    ):
        assert variables[name]["secretKeyRef"] == {"name": "scriptgen-secrets", "key": key}
    config = find(prod, "ConfigMap", "scriptgen-config")["data"]
    assert config["SCRIPTGEN_CHROMA_URL"].startswith("http")
    for name in ("scriptgen-core", "scriptgen-gateway"):
        rollout = find(prod, "Rollout", name)
        assert rollout["spec"]["replicas"] >= 2
        assert rollout["spec"]["workloadRef"]["name"] == name
        autoscaler = find(prod, "HorizontalPodAutoscaler", name)
        assert autoscaler["spec"]["scaleTargetRef"]["kind"] == "Rollout"
        assert autoscaler["spec"]["minReplicas"] >= 2
    assert find(prod, "Ingress", "scriptgen")["spec"]["tls"]


def test_prod_writes_with_real_providers_and_will_not_start_without_their_keys(
    prod: list[Manifest],
) -> None:
    chain = find(prod, "ConfigMap", "scriptgen-config")["data"]["SCRIPTGEN_PROVIDERS"]
    names = [name.strip() for name in chain.split(",")]
    assert names and "synthetic" not in names
    variables = env(container(find(prod, "Deployment", "scriptgen-core"), "core"))
    keys = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
    for name in names:
        reference = variables[keys[name]]["secretKeyRef"]
        assert reference["name"] == "scriptgen-secrets"
        assert reference.get("optional") is False, f"{keys[name]} must be required"
    # A core missing a named provider's key refuses to start, instead of falling back to
    # the synthetic writer.
    with pytest.raises(ValueError, match="is not set up"):
        build_providers(chain=chain)
    configured = build_providers(chain=chain, openai_api_key="k", anthropic_api_key="k")
    assert "synthetic" not in [route.provider for route in configured.write.routes]


def test_prod_canary_goes_10_50_100_and_rolls_back_on_latency_or_errors(
    prod: list[Manifest],
) -> None:
    for name in ("scriptgen-core", "scriptgen-gateway"):
        canary = find(prod, "Rollout", name)["spec"]["strategy"]["canary"]
        weights = [step["setWeight"] for step in canary["steps"] if "setWeight" in step]
        assert weights == [10, 50, 100]
        (template_ref,) = canary["analysis"]["templates"]
        template = find(prod, "AnalysisTemplate", template_ref["templateName"])
        conditions = {m["name"]: m for m in template["spec"]["metrics"]}
        latency = conditions["time-to-first-event-p95"]
        assert "time_to_first_event_seconds_bucket" in latency["provider"]["prometheus"]["query"]
        assert "result[0] <= 1" in latency["successCondition"]
        errors = conditions["error-ratio"]
        assert "result[0] <= 0.02" in errors["successCondition"]
        for metric in conditions.values():
            query = metric["provider"]["prometheus"]["query"]
            assert "{{args.canary-hash}}" in query
            assert metric["failureLimit"] <= 1
        hash_arg = canary["analysis"]["args"][0]
        assert hash_arg["valueFrom"]["podTemplateHashValue"] == "Latest"


def test_prod_backs_up_nightly_with_the_backup_command(prod: list[Manifest]) -> None:
    cron = find(prod, "CronJob", "scriptgen-backup")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert re.fullmatch(r"\d+ \d+ \* \* \*", cron["spec"]["schedule"])
    backup = container(cron, "backup")
    mounts = {m["mountPath"]: m["name"] for m in backup["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(cron)["volumes"]}
    assert volumes[mounts["/backups"]]["persistentVolumeClaim"]["claimName"] == "scriptgen-backups"
    find(prod, "PersistentVolumeClaim", "scriptgen-backups")
    # A failed night is not re-run in place by the kubelet (create again, in a loop).
    assert pod_spec(cron)["restartPolicy"] == "Never"
    # With the default policy (Always) the kubelet chmods every file for fsGroup on each
    # mount, making the backups' 0600 files and 0700 folders group-readable.
    assert pod_spec(cron)["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"


def _backup_night(script: str, bin_dir: Path, failing: str) -> tuple[int, list[str], str]:
    """Run the CronJob's script with a stand-in `scriptgen` whose action `failing` fails:
    its exit status, the commands it ran, and its stderr."""
    calls = bin_dir / "calls"
    calls.unlink(missing_ok=True)
    answer = subprocess.run(
        ["/bin/sh", "-c", script],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "CALLS": str(calls), "FAILING": failing},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    ran = calls.read_text(encoding="utf-8").splitlines() if calls.exists() else []
    return answer.returncode, ran, answer.stderr


def test_the_backup_job_prunes_only_verified_nights_and_survives_a_failed_prune(
    prod: list[Manifest], tmp_path: Path
) -> None:
    backup = container(find(prod, "CronJob", "scriptgen-backup"), "backup")
    assert backup["command"] == ["/bin/sh", "-c"]
    (script,) = backup["args"]
    stand_in = tmp_path / "scriptgen"
    stand_in.write_text(
        '#!/bin/sh\necho "$*" >> "$CALLS"\n'
        '[ "$2" != "$FAILING" ] || { echo "$2: broke" >&2; exit 1; }\n',
        encoding="utf-8",
    )
    stand_in.chmod(0o755)

    status, ran, said = _backup_night(script, tmp_path, failing="none")
    assert status == 0 and said == "", said
    create, verify, prune = ran
    folder = create.removeprefix("backup create ")
    assert re.fullmatch(r"/backups/\d{8}T\d{6}Z", folder), create
    assert verify == f"backup verify {folder}"
    assert re.fullmatch(r"backup prune /backups --keep [1-9]\d*", prune), prune
    # A failed prune is said on stderr, and the night's Job still succeeds.
    status, ran, said = _backup_night(script, tmp_path, failing="prune")
    assert status == 0 and len(ran) == 3
    assert "prune: broke" in said and "backup prune failed" in said
    # Nothing is pruned after a failed verify or create, and the Job fails.
    status, ran, said = _backup_night(script, tmp_path, failing="verify")
    assert status != 0 and [call.split()[1] for call in ran] == ["create", "verify"]
    status, ran, said = _backup_night(script, tmp_path, failing="create")
    assert status != 0 and [call.split()[1] for call in ran] == ["create"]


def _readme_section(title: str) -> str:
    """One `## title` section of the README, up to the next section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def test_the_backup_schedule_is_the_one_the_readme_states(prod: list[Manifest]) -> None:
    cron = find(prod, "CronJob", "scriptgen-backup")
    section = _readme_section("Backups")
    # A five-field cron expression in backticks, and the time zone it is stated in.
    stated = re.findall(r"`([0-9*/,-]+(?: [0-9*/,-]+){4})`\s+(UTC)\b", section)
    assert stated == [(cron["spec"]["schedule"], "UTC")], stated
    assert cron["spec"]["timeZone"] in {"Etc/UTC", "UTC"}
    assert "deploy/k8s/overlays/prod/backup-cronjob.yaml" in section
    # Once a day: the recovery point the README promises follows from it.
    if re.fullmatch(r"\d+ \d+ \* \* \*", cron["spec"]["schedule"]):
        assert "at most 24 hours of work can be lost" in " ".join(section.split())


def test_gateways_spread_calls_over_every_core_pod(built: tuple[str, list[Manifest]]) -> None:
    _, manifests = built
    gateway = env(container(find(manifests, "Deployment", "scriptgen-gateway"), "gateway"))
    target = gateway["SCRIPTGEN_CORE_TARGET"]
    assert gateway["SCRIPTGEN_CORE_LOAD_BALANCING"] == "round_robin"
    assert target.startswith("dns:///")
    host, _, port = target.removeprefix("dns:///").partition(":")
    headless = find(manifests, "Service", host)
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == {"app.kubernetes.io/name": "scriptgen-core"}
    assert [p["port"] for p in headless["spec"]["ports"]] == [int(port)]
    # Cores ask gateways to reconnect now and then, so new cores get their share.
    core = env(container(find(manifests, "Deployment", "scriptgen-core"), "core"))
    assert 0 < float(core["SCRIPTGEN_MAX_CONNECTION_AGE_SECONDS"]) <= 600
    assert float(core["SCRIPTGEN_MAX_CONNECTION_AGE_GRACE_SECONDS"]) >= 3600
    # Scraped once per pod: no ServiceMonitor selects the headless Service.
    for monitor in of_kind(manifests, "ServiceMonitor"):
        labels = headless["metadata"]["labels"]
        assert not monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()


def _mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1.0, "Gi": 1024.0}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    return float(quantity) / (1024 * 1024)


def test_core_runs_its_provider_workers_within_its_limits(
    built: tuple[str, list[Manifest]],
) -> None:
    """No more provider workers than CPUs in the pod's limit (~100-160 MiB each; two on two
    CPUs spread a burst's requests over both, BENCHMARKS.md, session 39) beside a core that
    peaks near 200-300 MiB under the real provider load (session 30)."""
    _, manifests = built
    main = container(find(manifests, "Deployment", "scriptgen-core"), "core")
    workers = int(env(main)["SCRIPTGEN_PROVIDER_WORKERS"])
    assert 1 <= workers <= 16
    limits = main["resources"]["limits"]
    assert float(limits["cpu"]) >= workers
    assert _mebibytes(limits["memory"]) >= 300 + 160 * workers
