"""helm lint and helm template on the chart, with assertions on what it renders."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.chart.conftest import (
    CHART,
    FULL_VALUES,
    NAMESPACE,
    RELEASE,
    Helm,
    Objects,
    of_kind,
    one,
    render,
)

GATEWAY, OPERATOR = f"{RELEASE}-kubellm-gateway", f"{RELEASE}-kubellm-operator"
FULL = yaml.safe_load(FULL_VALUES.read_text())
KUBELLM_KINDS = ["llmproviders", "llmmodels", "accesspolicies", "apikeys"]
READ = ["get", "list", "watch"]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only  # type: ignore[no-any-return]


def env(deployment: dict[str, Any]) -> dict[str, Any]:
    """name -> value (or valueFrom); later entries win, as in Kubernetes."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(deployment)["env"]}


@pytest.mark.parametrize("values", [[], ["--values", FULL_VALUES]], ids=["default", "full"])
def test_lint_strict(helm: Helm, values: list[str]) -> None:
    result = helm("lint", "--strict", CHART, *values)
    assert "0 chart(s) failed" in result.stdout


def test_default_objects(default_objects: Objects) -> None:
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in default_objects)
    cluster = f"{NAMESPACE}-{RELEASE}-kubellm"
    assert kinds == sorted(
        [
            ("ClusterRole", f"{cluster}-gateway"),
            ("ClusterRoleBinding", f"{cluster}-gateway"),
            ("Deployment", GATEWAY),
            ("Deployment", OPERATOR),
            ("KopfPeering", "kubellm"),
            ("PodDisruptionBudget", GATEWAY),
            ("Role", GATEWAY),
            ("Role", OPERATOR),
            ("RoleBinding", GATEWAY),
            ("RoleBinding", OPERATOR),
            ("Service", GATEWAY),
            ("Service", f"{GATEWAY}-metrics"),
            ("ServiceAccount", GATEWAY),
            ("ServiceAccount", OPERATOR),
        ]
    )
    for obj in default_objects:
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]


@pytest.mark.parametrize("objects", ["default_objects", "full_objects"])
def test_labels(objects: str, request: pytest.FixtureRequest) -> None:
    rendered: Objects = request.getfixturevalue(objects)
    for obj in rendered:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "kubellm"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/part-of"] == "kubellm"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["helm.sh/chart"] == "kubellm-0.1.0"
        assert labels["app.kubernetes.io/component"] in ("gateway", "gateway-metrics", "operator")
    for deployment in of_kind(rendered, "Deployment"):
        selector = deployment["spec"]["selector"]["matchLabels"]
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items()
        # A selector is immutable: nothing that changes between releases may be in it.
        assert set(selector) == {
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/component",
        }


def rules(objects: Objects, kind: str, name: str, namespace: str | None = None) -> list[Any]:
    found = [
        o
        for o in of_kind(objects, kind)
        if o["metadata"]["name"] == name and o["metadata"].get("namespace") == namespace
    ]
    assert len(found) == 1, f"{kind} {namespace}/{name}: {len(found)} found"
    return found[0]["rules"]  # type: ignore[no-any-return]


def gateway_rules() -> list[Any]:
    return [
        {"apiGroups": ["kubellm.io"], "resources": KUBELLM_KINDS, "verbs": READ},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": READ},
    ]


def operator_rules() -> list[Any]:
    return [
        {"apiGroups": ["kubellm.io"], "resources": KUBELLM_KINDS, "verbs": READ},
        {
            "apiGroups": ["kubellm.io"],
            "resources": [f"{kind}/status" for kind in KUBELLM_KINDS],
            "verbs": ["patch"],
        },
        {
            "apiGroups": ["kubellm.io"],
            "resources": ["llmmodels"],
            "verbs": ["create", "patch", "delete"],
        },
        {"apiGroups": ["kubellm.io"], "resources": ["llmproviders"], "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": [*READ, "create", "patch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
        {
            "apiGroups": ["kopf.dev"],
            "resources": ["kopfpeerings"],
            "verbs": [*READ, "create", "patch"],
        },
    ]


@pytest.mark.parametrize(
    ("objects", "namespaces"),
    [("default_objects", [NAMESPACE]), ("full_objects", ["team-a", "team-b"])],
)
def test_rbac_is_exact_and_only_in_watched_namespaces(
    objects: str, namespaces: list[str], request: pytest.FixtureRequest
) -> None:
    rendered: Objects = request.getfixturevalue(objects)
    for namespace in namespaces:
        assert rules(rendered, "Role", GATEWAY, namespace) == gateway_rules()
        assert rules(rendered, "Role", OPERATOR, namespace) == operator_rules()
    assert {r["metadata"]["namespace"] for r in of_kind(rendered, "Role")} == set(namespaces)
    cluster = f"{NAMESPACE}-{RELEASE}-kubellm"
    assert rules(rendered, "ClusterRole", f"{cluster}-gateway") == [
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "resourceNames": ["llmmodels.kubellm.io"],
            "verbs": READ,
        }
    ]
    assert [r["metadata"]["name"] for r in of_kind(rendered, "ClusterRole")] == [
        f"{cluster}-gateway"
    ]


@pytest.mark.parametrize("objects", ["default_objects", "full_objects"])
def test_no_wildcards_and_bindings_point_at_the_release_accounts(
    objects: str, request: pytest.FixtureRequest
) -> None:
    rendered: Objects = request.getfixturevalue(objects)
    for role in of_kind(rendered, "Role") + of_kind(rendered, "ClusterRole"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert not any("*" in item for item in rule.get(field, [])), (role, rule)
    accounts = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["serviceAccountName"]
        for d in of_kind(rendered, "Deployment")
    }
    for binding in of_kind(rendered, "RoleBinding") + of_kind(rendered, "ClusterRoleBinding"):
        component = binding["metadata"]["labels"]["app.kubernetes.io/component"]
        account = accounts[f"{RELEASE}-kubellm-{component}"]
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
        ]
        assert binding["roleRef"]["name"] == binding["metadata"]["name"]


@pytest.mark.parametrize("objects", ["default_objects", "full_objects"])
def test_env_names_are_unique(objects: str, request: pytest.FixtureRequest) -> None:
    for deployment in of_kind(request.getfixturevalue(objects), "Deployment"):
        names = [e["name"] for e in container(deployment)["env"]]
        assert len(names) == len(set(names)), names


@pytest.mark.parametrize("objects", ["default_objects", "full_objects"])
def test_security_context(objects: str, request: pytest.FixtureRequest) -> None:
    rendered: Objects = request.getfixturevalue(objects)
    for deployment in of_kind(rendered, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        security = container(deployment)["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["runAsNonRoot"] is True
        assert security["capabilities"] == {"drop": ["ALL"]}
        # The one writable place, for a read-only root filesystem.
        assert container(deployment)["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
        assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]


def test_gateway_probes_ports_and_shutdown(default_objects: Objects) -> None:
    deployment = one(default_objects, "Deployment", GATEWAY)
    gateway = container(deployment)
    assert gateway["command"] == ["kubellm-gateway"]
    assert gateway["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9464, "protocol": "TCP"},
    ]
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    variables = env(deployment)
    assert variables["KUBELLM_SOURCE"] == "kubernetes"
    assert variables["KUBELLM_NAMESPACES"] == NAMESPACE
    assert (variables["KUBELLM_PORT"], variables["KUBELLM_METRICS_PORT"]) == ("8080", "9464")
    assert variables["KUBELLM_HOST"] == "0.0.0.0"  # noqa: S104 (a pod listens on its IP)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


@pytest.mark.parametrize(
    ("objects", "pre_stop", "grace"),
    [("default_objects", 5, 30), ("full_objects", 10, 120)],
)
def test_pre_stop_and_termination_grace_match_the_shutdown_grace(
    objects: str, pre_stop: int, grace: int, request: pytest.FixtureRequest
) -> None:
    deployment = one(request.getfixturevalue(objects), "Deployment", GATEWAY)
    gateway = container(deployment)
    assert gateway["lifecycle"]["preStop"] == {"sleep": {"seconds": pre_stop}}
    assert env(deployment)["KUBELLM_SHUTDOWN_GRACE"] == str(grace)
    # The kubelet's SIGKILL must come after the preStop sleep and the whole grace.
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == (
        pre_stop + grace + 10
    )


def test_services_and_pdb_select_the_gateway_pods(default_objects: Objects) -> None:
    deployment = one(default_objects, "Deployment", GATEWAY)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for p in container(deployment)["ports"]}
    api = one(default_objects, "Service", GATEWAY)
    metrics = one(default_objects, "Service", f"{GATEWAY}-metrics")
    assert api["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    assert metrics["spec"]["ports"] == [
        {"name": "metrics", "port": 9464, "targetPort": "metrics", "protocol": "TCP"}
    ]
    for service in (api, metrics):
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    pdb = one(default_objects, "PodDisruptionBudget", GATEWAY)
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == [
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    ]
    for constraint in spread:
        assert constraint["labelSelector"]["matchLabels"].items() <= pod_labels.items()
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"


def test_operator(default_objects: Objects) -> None:
    deployment = one(default_objects, "Deployment", OPERATOR)
    operator = container(deployment)
    assert operator["command"] == ["kubellm-operator"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    variables = env(deployment)
    assert variables["KUBELLM_NAMESPACES"] == NAMESPACE
    assert variables["KUBELLM_PEERING_NAME"] == "kubellm"
    assert "KUBELLM_STANDALONE" not in variables  # peering on
    assert variables["KUBELLM_LIVENESS_ENDPOINT"] == "http://0.0.0.0:8081/healthz"
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    peering = one(default_objects, "KopfPeering", "kubellm")
    assert (peering["apiVersion"], peering["metadata"]["namespace"]) == ("kopf.dev/v1", NAMESPACE)


def test_optional_objects_are_off_by_default(default_objects: Objects) -> None:
    kinds = {o["kind"] for o in default_objects}
    assert not kinds & {"HorizontalPodAutoscaler", "ServiceMonitor", "NetworkPolicy"}


def test_full_values(full_objects: Objects) -> None:
    gateway = one(full_objects, "Deployment", GATEWAY)
    operator = one(full_objects, "Deployment", OPERATOR)
    assert "replicas" not in gateway["spec"], "the HPA owns the replica count"
    hpa = one(full_objects, "HorizontalPodAutoscaler", GATEWAY)
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": GATEWAY,
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    assert container(gateway)["image"] == "registry.example.com/platform/kubellm:0.1.0-rc1"
    assert gateway["spec"]["template"]["spec"]["imagePullSecrets"] == [
        {"name": "registry-credentials"}
    ]
    for deployment in (gateway, operator):
        variables = env(deployment)
        assert variables["KUBELLM_NAMESPACES"] == "team-a,team-b"
        assert (
            variables["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4318"
        )
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        assert variables["OTEL_SERVICE_NAME"] == f"kubellm-{component}"
        assert variables["OTEL_RESOURCE_ATTRIBUTES"] == (
            "k8s.pod.name=$(POD_NAME),deployment.environment=production"
        )
        # The chart's sampling default: callers' sampled traces, and one in ten of the rest.
        assert variables["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
        assert variables["OTEL_TRACES_SAMPLER_ARG"] == "0.1"
    variables = env(gateway)
    assert variables["KUBELLM_OIDC_ISSUER"] == "https://keycloak.example.com/realms/platform"
    assert variables["KUBELLM_OIDC_AUDIENCE"] == "kubellm"
    assert variables["KUBELLM_OIDC_GROUPS_CLAIM"] == "realm_access.roles"
    # The Redis URL may hold a password: only ever a Secret reference.
    assert variables["KUBELLM_REDIS_URL"] == {
        "secretKeyRef": {"name": "kubellm-redis", "key": "url"}
    }
    # An extraEnv entry replaces the chart's own of the same name (server-side apply,
    # helm 4's default, refuses two entries with one name).
    assert variables["KUBELLM_LOG_LEVEL"] == "warning"
    assert container(gateway)["env"][-1] == {"name": "KUBELLM_LOG_LEVEL", "value": "warning"}
    assert env(operator)["KUBELLM_LOG_LEVEL"] == "debug"
    assert env(operator)["AZURE_AUTHORITY_HOST"] == "https://login.microsoftonline.us"
    assert env(operator)["KUBELLM_PEERING_NAME"] == "platform"
    # The POD_NAME used by OTEL_RESOURCE_ATTRIBUTES is defined before it.
    names = [e["name"] for e in container(gateway)["env"]]
    assert names.index("POD_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES")

    assert operator["spec"]["template"]["spec"]["serviceAccountName"] == "kubellm-operator-existing"
    assert [a["metadata"]["name"] for a in of_kind(full_objects, "ServiceAccount")] == [GATEWAY]
    peerings = of_kind(full_objects, "KopfPeering")
    assert sorted((p["metadata"]["namespace"], p["metadata"]["name"]) for p in peerings) == [
        ("team-a", "platform"),
        ("team-b", "platform"),
    ]

    monitor = one(full_objects, "ServiceMonitor", GATEWAY)
    metrics = one(full_objects, "Service", f"{GATEWAY}-metrics")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= metrics["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s"}
    ]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"

    policy = one(full_objects, "NetworkPolicy", GATEWAY)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [
        {
            "ports": [{"port": "http", "protocol": "TCP"}],
            "from": FULL["gateway"]["networkPolicy"]["apiFrom"],
        },
        {
            "ports": [{"port": "metrics", "protocol": "TCP"}],
            "from": FULL["gateway"]["networkPolicy"]["metricsFrom"],
        },
    ]
    closed = one(full_objects, "NetworkPolicy", OPERATOR)
    assert closed["spec"]["ingress"] == []
    assert one(full_objects, "PodDisruptionBudget", GATEWAY)["spec"]["maxUnavailable"] == "25%"


def test_network_policy_without_peers_admits_any_client(helm: Helm) -> None:
    policy = one(
        render(helm, "--set", "gateway.networkPolicy.enabled=true"), "NetworkPolicy", GATEWAY
    )
    assert all("from" not in rule for rule in policy["spec"]["ingress"])


def test_tracing_is_off_by_default_and_sampling_can_be_the_sdks(
    helm: Helm, default_objects: Objects
) -> None:
    assert not any(
        name.startswith("OTEL_") for name in env(one(default_objects, "Deployment", GATEWAY))
    )
    variables = env(
        one(
            render(
                helm,
                *("--set", "otel.endpoint=http://collector:4318"),
                *("--set", "otel.sampler=parentbased_always_on", "--set", "otel.samplerArg="),
            ),
            "Deployment",
            GATEWAY,
        )
    )
    assert variables["OTEL_TRACES_SAMPLER"] == "parentbased_always_on"
    assert "OTEL_TRACES_SAMPLER_ARG" not in variables
    unset = render(helm, "--set", "otel.endpoint=http://collector:4318", "--set", "otel.sampler=")
    assert "OTEL_TRACES_SAMPLER" not in env(one(unset, "Deployment", GATEWAY))


def test_operator_can_be_left_out(helm: Helm) -> None:
    rendered = render(helm, "--set", "operator.enabled=false")
    assert {o["metadata"]["labels"]["app.kubernetes.io/component"] for o in rendered} == {
        "gateway",
        "gateway-metrics",
    }


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("gateway.replicas=0", "/gateway/replicas"),
        ("gateway.port=70000", "/gateway/port"),
        ("logLevel=verbose", "/logLevel"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("gateway.shutdown.graceSeconds=0", "/gateway/shutdown/graceSeconds"),
        ("gateway.shutdown.preStopSeconds=-1", "/gateway/shutdown/preStopSeconds"),
        ("watchNamespaces={Team_A}", "/watchNamespaces/0"),
        ("watchNamespaces={a,a}", "/watchNamespaces"),
        ("gateway.replicaCount=3", "additional properties 'replicaCount' not allowed"),
        ("securityContext.readOnlyRootFilesystem=false", "/securityContext/readOnlyRootFilesystem"),
        (
            "securityContext.allowPrivilegeEscalation=true",
            "/securityContext/allowPrivilegeEscalation",
        ),
        ("podSecurityContext.runAsUser=0", "/podSecurityContext/runAsUser"),
        ("gateway.service.type=ExternalName", "/gateway/service/type"),
        ("gateway.oidc.issuer=http://keycloak", "/gateway/oidc/issuer"),
        ("otel.endpoint=collector:4317", "/otel/endpoint"),
        ("otel.sampler=sometimes", "/otel/sampler"),
        ("otel.samplerArg=2", "/otel/samplerArg"),
        (
            "gateway.autoscaling.targetCPUUtilizationPercentage=150",
            "targetCPUUtilizationPercentage",
        ),
        (
            "gateway.podDisruptionBudget.maxUnavailable=0",
            "/gateway/podDisruptionBudget/maxUnavailable",
        ),
        ("gateway.serviceMonitor.interval=often", "/gateway/serviceMonitor/interval"),
        ("gateway.extraEnv[0].value=x", "/gateway/extraEnv/0"),
        ("operator.peering.name=Not_A_Name", "/operator/peering/name"),
    ],
)
def test_values_schema_rejects_bad_values(helm: Helm, setting: str, complaint: str) -> None:
    result = helm("template", RELEASE, CHART, "--set", setting, check=False)
    assert result.returncode != 0, f"{setting} was accepted"
    assert "don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["gateway.oidc.issuer=https://idp.example.com"], "gateway.oidc.audience is required"),
        (
            ["gateway.serviceAccount.create=false"],
            "gateway.serviceAccount.name is required when gateway.serviceAccount.create is false",
        ),
    ],
)
def test_incomplete_values_fail_with_a_message(
    helm: Helm, settings: list[str], message: str
) -> None:
    args = [arg for setting in settings for arg in ("--set", setting)]
    result = helm("template", RELEASE, CHART, *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_crds_cover_every_custom_kind_the_chart_creates(helm: Helm, full_objects: Objects) -> None:
    crds = [
        doc
        for doc in yaml.safe_load_all(helm("show", "crds", CHART).stdout)
        if doc and doc["kind"] == "CustomResourceDefinition"
    ]
    served = {(c["spec"]["group"], c["spec"]["names"]["kind"]) for c in crds}
    assert {
        ("kubellm.io", kind) for kind in ("LLMProvider", "LLMModel", "AccessPolicy", "APIKey")
    } <= served
    # The Prometheus Operator brings ServiceMonitor's CRD; every other custom kind is ours.
    groups = {(o["apiVersion"].rpartition("/")[0], o["kind"]) for o in full_objects}
    custom = {(g, kind) for g, kind in groups if "." in g and not g.endswith(".k8s.io")}
    assert custom - served == {("monitoring.coreos.com", "ServiceMonitor")}


def test_notes_tell_how_to_get_a_key_and_call_the_gateway(helm: Helm) -> None:
    notes = helm(
        "install", RELEASE, CHART, "--namespace", NAMESPACE, "--dry-run=client"
    ).stdout.split("NOTES:", 1)[1]
    assert f"kubectl apply -n {NAMESPACE} -f deploy/examples/" in notes
    assert "jsonpath='{.spec.secretName}'" in notes
    assert "jsonpath='{.data.apiKey}' | base64 -d" in notes
    assert f"kubectl port-forward -n {NAMESPACE} svc/{GATEWAY} 8080:80" in notes
    assert f"http://{GATEWAY}.{NAMESPACE}.svc:80/v1" in notes
    assert "OPENAI_BASE_URL=http://127.0.0.1:8080/v1" in notes
