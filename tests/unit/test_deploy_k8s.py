"""deploy/k8s: every overlay renders with kustomize and validates against the Kubernetes schemas;
the Strimzi resources, the services' wiring and the network policies are checked here."""

from __future__ import annotations

import fcntl
import inspect
import ipaddress
import os
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from carbon.cli import SERVICES
from carbon.kafka import TOPIC, ensure_topic
from carbon.settings import PlatformSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy/k8s"
TOOLS_SH = ROOT / "deploy/local/tools.sh"
OVERLAYS = ("dev", "prod")
# The schemas kubernetes-validate ships for this release; the manifests use nothing newer.
KUBERNETES_VERSION = "1.30"
APP = {spec.name: spec for spec in SERVICES}
STRIMZI_GROUP = "kafka.strimzi.io"
PRIVATE_V4 = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16", "100.64.0.0/10")
PRIVATE_V6 = ("fc00::/7", "fe80::/10", "::1/128")


# --- kustomize ----------------------------------------------------------------------------------


def tools_bin() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(os.environ.get("CARBON_TOOLS_BIN") or cache / "carbon/bin")


def find_kustomize() -> str | None:
    pinned = tools_bin() / "kustomize"
    if os.access(pinned, os.X_OK):
        return str(pinned)
    return shutil.which("kustomize")


@pytest.fixture(scope="module")
def kustomize() -> str:
    found = find_kustomize()
    if found:
        return found
    # Build it once (Go, no root); a lock keeps parallel test workers from building it twice.
    tools_bin().mkdir(parents=True, exist_ok=True)
    with open(tools_bin() / ".kustomize.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = find_kustomize()
        if found:
            return found
        result = subprocess.run([str(TOOLS_SH), "kustomize"], capture_output=True, text=True, timeout=900)
    found = find_kustomize()
    if not found:
        pytest.fail(
            "kustomize is needed to render deploy/k8s and could not be installed:\n"
            f"{result.stderr.strip()}\n"
            "Install Go 1.21+ and run `deploy/local/tools.sh kustomize` (it builds kustomize into "
            f"{tools_bin()}), or put kustomize v5 on PATH."
        )
    return found


def build(kustomize: str, path: Path) -> list[dict]:
    result = subprocess.run([kustomize, "build", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"kustomize build {path.relative_to(ROOT)} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(kustomize: str) -> dict[str, list[dict]]:
    return {overlay: build(kustomize, K8S / "overlays" / overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="module")
def kafka_resources(kustomize: str) -> list[dict]:
    return build(kustomize, K8S / "kafka")


def of_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, deployment["metadata"]["name"]
    return containers[0]


def is_strimzi(doc: dict) -> bool:
    return doc["apiVersion"].split("/")[0] == STRIMZI_GROUP


# --- schemas ------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_against_the_kubernetes_schemas(rendered: dict[str, list[dict]], overlay: str) -> None:
    docs = rendered[overlay]
    assert docs, f"{overlay} renders nothing"
    errors = []
    for doc in docs:
        if is_strimzi(doc):
            continue
        try:
            # strict: unknown fields (a misspelt key) are errors too.
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {getattr(exc, 'message', exc)}")
    assert not errors, "\n".join(errors)


def test_kafka_resources_are_strimzi_only_and_namespaced(kafka_resources: list[dict]) -> None:
    assert {d["kind"] for d in kafka_resources} == {"Kafka", "KafkaNodePool", "KafkaTopic"}
    for doc in kafka_resources:
        assert doc["apiVersion"] == f"{STRIMZI_GROUP}/v1", doc["apiVersion"]
        assert doc["metadata"]["namespace"] == "kafka"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"]), doc["metadata"]["name"]


def test_kafka_cluster_is_kraft_with_node_pools(kafka_resources: list[dict], rendered: dict[str, list[dict]]) -> None:
    clusters = of_kind(kafka_resources, "Kafka")
    assert len(clusters) == 1
    (name, kafka), = clusters.items()
    pools = of_kind(kafka_resources, "KafkaNodePool").values()
    assert pools
    roles: set[str] = set()
    brokers = 0
    for pool in pools:
        assert pool["metadata"]["labels"]["strimzi.io/cluster"] == name
        spec = pool["spec"]
        assert spec["replicas"] >= 1 and set(spec["roles"]) <= {"controller", "broker"}
        assert spec["storage"]["type"] in ("jbod", "persistent-claim", "ephemeral")
        roles |= set(spec["roles"])
        brokers += spec["replicas"] if "broker" in spec["roles"] else 0
    assert roles == {"controller", "broker"}, "KRaft needs controllers and brokers"
    assert "zookeeper" not in kafka["spec"]
    assert "topicOperator" in kafka["spec"]["entityOperator"], "the KafkaTopic needs the topic operator"

    # The services' bootstrap address is this cluster's plain listener.
    listeners = {listener["name"]: listener for listener in kafka["spec"]["kafka"]["listeners"]}
    plain = next(listener for listener in listeners.values() if listener["tls"] is False)
    assert plain["type"] == "internal"
    namespace = kafka["metadata"]["namespace"]
    config = of_kind(rendered["prod"], "ConfigMap")
    shared = next(cm for n, cm in config.items() if n.startswith("carbon-config"))
    assert shared["data"]["CARBON_KAFKA_BOOTSTRAP"] == f"{name}-kafka-bootstrap.{namespace}.svc:{plain['port']}"
    min_isr = kafka["spec"]["kafka"]["config"]["min.insync.replicas"]
    assert kafka["spec"]["kafka"]["config"]["default.replication.factor"] <= brokers
    assert min_isr < brokers


def test_kafka_topic_is_the_platforms(kafka_resources: list[dict]) -> None:
    cluster = next(iter(of_kind(kafka_resources, "Kafka")))
    brokers = sum(p["spec"]["replicas"] for p in of_kind(kafka_resources, "KafkaNodePool").values()
                  if "broker" in p["spec"]["roles"])
    topics = of_kind(kafka_resources, "KafkaTopic")
    assert len(topics) == 1
    topic = next(iter(topics.values()))
    assert topic["metadata"]["labels"]["strimzi.io/cluster"] == cluster
    spec = topic["spec"]
    assert spec["topicName"] == TOPIC == PlatformSettings().kafka_topic
    # The same partition count the relay would create: keys (enterprise ids) map to the same partitions.
    assert spec["partitions"] == inspect.signature(ensure_topic).parameters["partitions"].default
    assert 2 <= spec["replicas"] <= brokers
    assert 1 <= spec["config"]["min.insync.replicas"] < spec["replicas"]


# --- the services ---------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_runs_its_factory_with_probes_and_limits(rendered: dict[str, list[dict]], overlay: str) -> None:
    docs = rendered[overlay]
    deployments, services = of_kind(docs, "Deployment"), of_kind(docs, "Service")
    assert set(deployments) == set(APP) == set(services)
    for name, spec in APP.items():
        c = container(deployments[name])
        assert c["command"] == ["uvicorn"]
        args = c["args"]
        assert args[0] == spec.factory and "--factory" in args
        assert args[args.index("--port") + 1] == str(spec.port)
        assert c["ports"] == [{"name": "http", "containerPort": spec.port}]
        assert services[name]["spec"]["ports"] == [{"name": "http", "port": spec.port, "targetPort": "http"}]
        selector = deployments[name]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployments[name]["spec"]["template"]["metadata"]["labels"].items()
        assert services[name]["spec"]["selector"] == selector
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{name}: {kind}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_non_root_with_a_read_only_root(rendered: dict[str, list[dict]], overlay: str) -> None:
    for name, deployment in of_kind(rendered[overlay], "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        c = container(deployment)
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        for spread in pod.get("topologySpreadConstraints", []):
            # The API server refuses a key both in matchLabelKeys and in the selector.
            selector = spread["labelSelector"]
            keys = set(selector.get("matchLabels", {})) | {e["key"] for e in selector.get("matchExpressions", [])}
            assert not keys & set(spread.get("matchLabelKeys", [])), f"{name}: {spread}"
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], f"{name}: /tmp is not an emptyDir"
    namespace = next(iter(of_kind(rendered[overlay], "Namespace").values()))
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configuration_comes_from_config_maps_and_secret_references(rendered: dict[str, list[dict]], overlay: str) -> None:
    docs = rendered[overlay]
    assert not of_kind(docs, "Secret"), "Secrets are created in the cluster, never rendered from the repository"
    config_maps = of_kind(docs, "ConfigMap")
    database_secrets = set()
    for name, deployment in of_kind(docs, "Deployment").items():
        c = container(deployment)
        env: dict[str, str] = {}
        for source in c["envFrom"]:
            env |= config_maps[source["configMapRef"]["name"]]["data"]
        refs = {}
        for variable in c["env"]:
            assert "value" not in variable, f"{name}: {variable['name']} is a literal; use a ConfigMap or a Secret"
            refs[variable["name"]] = variable["valueFrom"]["secretKeyRef"]
        assert refs["CARBON_JWT_SECRET"] == {"name": "carbon-jwt", "key": "secret"}
        assert refs["CARBON_DATABASE_URL"]["name"] == f"{name}-database"
        database_secrets.add(refs["CARBON_DATABASE_URL"]["name"])
        for key in env:
            assert not re.search(r"PASSWORD|SECRET|TOKEN|DATABASE_URL", key), f"{name}: {key} in a ConfigMap"
        assert env["OTEL_SERVICE_NAME"] == name
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http://")
        assert env["CARBON_ACCOUNT_URL"] == f"http://account:{APP['account'].port}"
        assert env.get("CARBON_KAFKA_TOPIC", TOPIC) == TOPIC
        if name == "disclosure":
            assert env["CARBON_RATING_URL"] == f"http://rating:{APP['rating'].port}"
        expected_transport = {"dev": {"store", "kafka"}, "prod": {"kafka"}}[overlay]
        assert env["CARBON_TRANSPORT"] in expected_transport, f"{overlay}/{name}: {env['CARBON_TRANSPORT']}"
        account = of_kind(docs, "ServiceAccount")[deployment["spec"]["template"]["spec"]["serviceAccountName"]]
        assert account["automountServiceAccountToken"] is False
    assert len(database_secrets) == len(APP), "each service reads only its own database URL"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_has_a_disruption_budget(rendered: dict[str, list[dict]], overlay: str) -> None:
    budgets = of_kind(rendered[overlay], "PodDisruptionBudget").values()
    for name, deployment in of_kind(rendered[overlay], "Deployment").items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        matching = [b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(matching) == 1, f"{name}: {len(matching)} budgets"
        # maxUnavailable, so a single replica can still be drained.
        assert matching[0]["spec"].get("maxUnavailable") == 1


def test_dev_runs_one_small_replica_of_each(rendered: dict[str, list[dict]]) -> None:
    docs = rendered["dev"]
    assert not of_kind(docs, "HorizontalPodAutoscaler")
    for name, deployment in of_kind(docs, "Deployment").items():
        assert deployment["spec"]["replicas"] == 1, name
        assert container(deployment)["image"] == "carbon-account-platform:dev"


def test_prod_is_replicated_pinned_and_autoscales_rating(rendered: dict[str, list[dict]]) -> None:
    docs = rendered["prod"]
    scalers = of_kind(docs, "HorizontalPodAutoscaler")
    assert set(scalers) == {"rating"}
    hpa = scalers["rating"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "rating"}
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    images = set()
    for name, deployment in of_kind(docs, "Deployment").items():
        if name == "rating":
            # The autoscaler owns the count; a fixed one would be reset on every apply.
            assert "replicas" not in deployment["spec"]
        else:
            assert deployment["spec"]["replicas"] >= 2, name
        images.add(container(deployment)["image"])
    assert len(images) == 1
    image = images.pop()
    name, _, tag = image.rpartition(":")
    assert "@sha256:" in image or (name and "/" not in tag and tag not in ("", "latest")), f"prod image not pinned: {image}"


# --- network policies ---------------------------------------------------------------------------

# Outside endpoints as (namespace, pod labels); "elsewhere" stands for any other namespace.
OUTSIDE = {
    "ingress": ("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}),
    "kafka": ("kafka", {"strimzi.io/cluster": "carbon"}),
    "postgres": ("postgres", {"app": "postgres"}),
    "collector": ("observability", {"app": "otel-collector"}),
    "dns": ("kube-system", {"k8s-app": "kube-dns"}),
    "elsewhere": ("default", {"app": "something"}),
}


def selects(selector: dict | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


class Cluster:
    """Just enough of NetworkPolicy semantics to list what the rendered policies allow."""

    def __init__(self, docs: list[dict]) -> None:
        namespace = next(iter(of_kind(docs, "Namespace").values()))
        self.namespace = namespace["metadata"]["name"]
        self.namespace_labels = {**namespace["metadata"].get("labels", {}), "kubernetes.io/metadata.name": self.namespace}
        self.policies = list(of_kind(docs, "NetworkPolicy").values())
        self.pods = {}
        for name, deployment in of_kind(docs, "Deployment").items():
            ports = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
            self.pods[name] = (deployment["spec"]["template"]["metadata"]["labels"], ports)

    def peer_matches(self, peer: dict, namespace: str, namespace_labels: dict, labels: dict) -> bool:
        if "ipBlock" in peer:
            return False  # pods are reached by selectors; address blocks are checked separately
        if "namespaceSelector" in peer:
            if not selects(peer["namespaceSelector"], namespace_labels):
                return False
        elif namespace != self.namespace:
            return False
        return selects(peer.get("podSelector"), labels)

    @staticmethod
    def port_matches(rules: list[dict] | None, port: int, named: dict[str, int]) -> bool:
        if not rules:
            return True
        for rule in rules:
            if rule.get("protocol", "TCP") != "TCP":
                continue
            wanted = rule.get("port")
            if wanted is None or wanted == port or named.get(wanted) == port:
                return True
        return False

    def _allowed(self, direction: str, pod: str, peer_ns: str, peer_labels: dict, port: int, named: dict) -> bool:
        labels = self.pods[pod][0]
        peer_ns_labels = self.namespace_labels if peer_ns == self.namespace else {"kubernetes.io/metadata.name": peer_ns}
        key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        applicable = [p for p in self.policies if direction in p["spec"]["policyTypes"]
                      and selects(p["spec"]["podSelector"], labels)]
        if not applicable:
            return True
        for policy in applicable:
            for rule in policy["spec"].get(key) or []:
                peers = rule.get(peers_key)
                peer_ok = peers is None or any(self.peer_matches(p, peer_ns, peer_ns_labels, peer_labels) for p in peers)
                if peer_ok and self.port_matches(rule.get("ports"), port, named):
                    return True
        return False

    def between(self, source: str, target: str) -> bool:
        """May pod `source` open a connection to pod `target`'s service port (both in this namespace)?"""
        target_labels, named = self.pods[target]
        port = APP[target].port
        return (self._allowed("Egress", source, self.namespace, target_labels, port, named)
                and self._allowed("Ingress", target, self.namespace, self.pods[source][0], port, named))

    def ingress_from(self, outside: str, target: str) -> bool:
        namespace, labels = OUTSIDE[outside]
        target_labels, named = self.pods[target]
        return self._allowed("Ingress", target, namespace, labels, APP[target].port, named)

    def egress_to(self, source: str, outside: str, port: int, protocol: str = "TCP") -> bool:
        namespace, labels = OUTSIDE[outside]
        if protocol != "TCP":
            # Only DNS speaks UDP here: look for a rule naming the protocol.
            return any(
                selects(p["spec"]["podSelector"], self.pods[source][0])
                and any(
                    any(r.get("protocol") == protocol and r.get("port") == port for r in rule.get("ports", []))
                    and any(self.peer_matches(peer, namespace, {"kubernetes.io/metadata.name": namespace}, labels)
                            for peer in rule.get("to", []))
                    for rule in p["spec"].get("egress") or []
                )
                for p in self.policies if "Egress" in p["spec"]["policyTypes"]
            )
        return self._allowed("Egress", source, namespace, labels, port, {})

    def address_blocks(self, source: str, port: int) -> list[dict]:
        blocks = []
        for policy in self.policies:
            if "Egress" not in policy["spec"]["policyTypes"] or not selects(policy["spec"]["podSelector"], self.pods[source][0]):
                continue
            for rule in policy["spec"].get("egress") or []:
                if self.port_matches(rule.get("ports"), port, {}):
                    blocks += [peer["ipBlock"] for peer in rule.get("to", []) if "ipBlock" in peer]
        return blocks


@pytest.fixture(scope="module", params=OVERLAYS)
def cluster(request: pytest.FixtureRequest, rendered: dict[str, list[dict]]) -> Cluster:
    return Cluster(rendered[request.param])


def test_network_policies_deny_by_default(cluster: Cluster) -> None:
    assert any(p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
               and not p["spec"].get("ingress") and not p["spec"].get("egress") for p in cluster.policies)


def test_services_call_only_what_the_architecture_has(cluster: Cluster) -> None:
    allowed = {(s, t) for s in APP for t in APP if s != t and cluster.between(s, t)}
    assert allowed == {
        ("accounting", "account"), ("rating", "account"), ("disclosure", "account"), ("disclosure", "rating"),
    }


def test_ingress_only_from_the_ingress_controller(cluster: Cluster) -> None:
    for name in APP:
        assert cluster.ingress_from("ingress", name), name
        for outside in ("kafka", "postgres", "collector", "elsewhere"):
            assert not cluster.ingress_from(outside, name), f"{outside} -> {name}"


def test_egress_to_the_clusters_infrastructure(cluster: Cluster) -> None:
    for name in APP:
        assert cluster.egress_to(name, "postgres", 5432), name
        assert cluster.egress_to(name, "collector", 4318), name
        assert cluster.egress_to(name, "dns", 53, "UDP") and cluster.egress_to(name, "dns", 53), name
        assert not cluster.egress_to(name, "elsewhere", 5432), name
        assert not cluster.egress_to(name, "postgres", 22), name
        uses_kafka = name in ("account", "rating", "disclosure")
        assert cluster.egress_to(name, "kafka", 9092) is uses_kafka, name


def test_only_disclosure_reaches_the_internet_and_only_public_https(cluster: Cluster) -> None:
    for name in APP:
        if name != "disclosure":
            assert not cluster.address_blocks(name, 443), name
            assert not cluster.address_blocks(name, 80), name
    assert not cluster.address_blocks("disclosure", 80)
    blocks = cluster.address_blocks("disclosure", 443)
    by_cidr = {b["cidr"]: set(b.get("except", [])) for b in blocks}
    assert set(by_cidr) == {"0.0.0.0/0", "::/0"}
    assert set(PRIVATE_V4) <= by_cidr["0.0.0.0/0"]
    assert set(PRIVATE_V6) <= by_cidr["::/0"]
    for cidr, excepted in by_cidr.items():
        network = ipaddress.ip_network(cidr)
        assert all(ipaddress.ip_network(e).subnet_of(network) for e in excepted), cidr
