"""Validation and defaulting: exact paths and messages, as the API server words them."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kubewire.api.errors import FieldError, ManifestError
from kubewire.api.loader import Document, load_text
from kubewire.api.validation import (
    VALIDATORS,
    apply_defaults,
    register_validator,
    validate,
    validate_and_default,
)

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for "
    "validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)


def deployment(**spec: Any) -> dict:
    base = {
        "replicas": 3,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web", "tier": "frontend"}},
            "spec": {
                "containers": [{"name": "web", "image": "nginx:1.25", "ports": [{"containerPort": 80}]}]
            },
        },
    }
    base.update(spec)
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": base}


def pod(**spec: Any) -> dict:
    base: dict = {"containers": [{"name": "app", "image": "busybox"}]}
    base.update(spec)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": base}


def errors(obj: dict, old: dict | None = None) -> list[str]:
    """Errors after defaulting, as validate_and_default would see them."""
    return [str(e) for e in validate(apply_defaults(obj), apply_defaults(old) if old else None)]


def test_valid_deployment_passes_and_gets_defaults() -> None:
    obj = validate_and_default(Document("d.yaml", 0, deployment(minReadySeconds=0)))
    spec = obj["spec"]
    assert obj["metadata"]["namespace"] == "default"
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }
    assert (spec["revisionHistoryLimit"], spec["progressDeadlineSeconds"]) == (10, 600)
    assert "minReadySeconds" not in spec
    pod_spec = spec["template"]["spec"]
    assert pod_spec["restartPolicy"] == "Always" and pod_spec["dnsPolicy"] == "ClusterFirst"
    assert (
        pod_spec["terminationGracePeriodSeconds"] == 30 and pod_spec["schedulerName"] == "default-scheduler"
    )
    assert "enableServiceLinks" not in pod_spec  # defaulted on Pods only, as upstream
    c = pod_spec["containers"][0]
    assert c["imagePullPolicy"] == "IfNotPresent" and c["ports"][0]["protocol"] == "TCP"
    assert c["terminationMessagePath"] == "/dev/termination-log" and c["terminationMessagePolicy"] == "File"


def test_replicas_default_to_one_and_input_is_not_mutated() -> None:
    raw = deployment()
    del raw["spec"]["replicas"]
    before = copy.deepcopy(raw)
    assert apply_defaults(raw)["spec"]["replicas"] == 1
    assert raw == before


def test_valid_pod_passes_and_gets_defaults() -> None:
    raw = pod(
        containers=[
            {
                "name": "app",
                "image": "registry.local:5000/app",
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"port": "http"}},
                "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 5},
                "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
            }
        ]
    )
    obj = validate_and_default(Document("p.yaml", 0, raw), namespace="team-a")
    assert obj["metadata"]["namespace"] == "team-a"
    spec = obj["spec"]
    assert spec["enableServiceLinks"] is True and spec["securityContext"] == {}
    c = spec["containers"][0]
    assert c["imagePullPolicy"] == "Always"  # untagged means :latest
    assert c["readinessProbe"] == {
        "httpGet": {"port": "http", "path": "/", "scheme": "HTTP"},
        "timeoutSeconds": 1,
        "periodSeconds": 10,
        "successThreshold": 1,
        "failureThreshold": 3,
    }
    assert c["livenessProbe"]["periodSeconds"] == 5
    assert c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"] == "v1"


@pytest.mark.parametrize(
    ("image", "policy"),
    [
        ("nginx", "Always"),
        ("nginx:latest", "Always"),
        ("nginx:1.25", "IfNotPresent"),
        ("nginx@sha256:abc", "IfNotPresent"),
    ],
)
def test_image_pull_policy_default(image: str, policy: str) -> None:
    assert (
        apply_defaults(pod(containers=[{"name": "a", "image": image}]))["spec"]["containers"][0][
            "imagePullPolicy"
        ]
        == policy
    )


def test_bad_name() -> None:
    obj = pod()
    obj["metadata"]["name"] = "Foo_bar"
    assert errors(obj) == [f'metadata.name: Invalid value: "Foo_bar": {SUBDOMAIN_MSG}']


def test_missing_name() -> None:
    obj = pod()
    del obj["metadata"]["name"]
    assert errors(obj) == ["metadata.name: Required value: name or generateName is required"]
    obj["metadata"]["generateName"] = "web-"
    assert errors(obj) == []


def test_namespace_names_are_dns_labels() -> None:
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team.a"}}
    assert errors(ns) == ['metadata.name: Invalid value: "team.a": must not contain dots']


def test_bad_labels() -> None:
    obj = pod()
    obj["metadata"]["labels"] = {"app": "-web", "bad key!": "x"}
    assert errors(obj) == [
        f'metadata.labels: Invalid value: "-web": {LABEL_VALUE_MSG}',
        'metadata.labels: Invalid value: "bad key!": name part must consist of alphanumeric characters, '
        "'-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or "
        "'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
    ]


def test_label_value_must_be_a_string() -> None:
    obj = pod()
    obj["metadata"]["labels"] = {"version": 1.5}
    assert errors(obj) == ["metadata.labels[version]: Invalid value: 1.5: must be of type string"]


def test_port_out_of_range_and_bad_protocol() -> None:
    obj = deployment()
    obj["spec"]["template"]["spec"]["containers"][0]["ports"] = [
        {"containerPort": 80},
        {"containerPort": 70000, "protocol": "Foo"},
    ]
    assert errors(obj) == [
        "spec.template.spec.containers[0].ports[1].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
        'spec.template.spec.containers[0].ports[1].protocol: Unsupported value: "Foo": supported values: "SCTP", "TCP", "UDP"',
    ]


def test_port_names_and_duplicates() -> None:
    obj = pod(
        containers=[
            {
                "name": "a",
                "image": "x",
                "ports": [
                    {"name": "http", "containerPort": 80},
                    {"name": "http", "containerPort": 81},
                    {"name": "8080", "containerPort": 82},
                ],
            }
        ]
    )
    assert errors(obj) == [
        'spec.containers[0].ports[1].name: Duplicate value: "http"',
        'spec.containers[0].ports[2].name: Invalid value: "8080": must contain at least one letter (a-z)',
    ]


def test_missing_selector() -> None:
    obj = deployment()
    del obj["spec"]["selector"]
    assert errors(obj) == [
        "spec.selector: Required value",
        'spec.template.metadata.labels: Invalid value: map[string]string{"app":"web", "tier":"frontend"}: '
        "`selector` does not match template `labels`",
    ]


def test_selector_does_not_match_template() -> None:
    obj = deployment(selector={"matchLabels": {"app": "api"}})
    assert errors(obj) == [
        'spec.template.metadata.labels: Invalid value: map[string]string{"app":"web", "tier":"frontend"}: '
        "`selector` does not match template `labels`"
    ]


def test_selector_match_expressions() -> None:
    selector = {
        "matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}],
    }
    assert errors(deployment(selector=selector)) == []
    selector["matchExpressions"] = [{"key": "tier", "operator": "Equals", "values": ["db"]}]
    assert errors(deployment(selector=selector)) == [
        'spec.selector.matchExpressions[0].operator: Invalid value: "Equals": not a valid selector operator',
        'spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{"app":"web"}, MatchExpressions:'
        '[]v1.LabelSelectorRequirement{v1.LabelSelectorRequirement{Key:"tier", Operator:"Equals", Values:[]string{"db"}}}}: '
        "invalid label selector",
    ]


def test_empty_selector() -> None:
    assert errors(deployment(selector={})) == [
        "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), "
        "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment"
    ]


def test_selector_is_immutable() -> None:
    old = validate_and_default(Document("d.yaml", 0, deployment()))
    new = deployment(selector={"matchLabels": {"app": "web", "tier": "frontend"}})
    assert errors(new, old) == [
        'spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{"app":"web", "tier":"frontend"}, '
        "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"
    ]
    assert errors(deployment(replicas=5), old) == []


def test_replicas_and_other_counts() -> None:
    obj = deployment(replicas=-1, minReadySeconds=700, revisionHistoryLimit=-2)
    assert errors(obj) == [
        "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
        "spec.revisionHistoryLimit: Invalid value: -2: must be greater than or equal to 0",
        "spec.progressDeadlineSeconds: Invalid value: 600: must be greater than minReadySeconds",
    ]


def test_wrong_type_is_reported_not_crashed_on() -> None:
    assert errors(deployment(replicas="3")) == ['spec.replicas: Invalid value: "3": must be of type integer']


def test_rolling_update_rules() -> None:
    zero = deployment(
        strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}
    )
    assert errors(zero) == [
        "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0%: may not be 0 when `maxSurge` is 0"
    ]
    bad = deployment(strategy={"rollingUpdate": {"maxSurge": "25", "maxUnavailable": "120%"}})
    assert errors(bad) == [
        "spec.strategy.rollingUpdate.maxSurge: Invalid value: 25: a valid percent string must be a numeric string "
        "followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
        "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 120%: must not be greater than 100%",
    ]
    recreate = deployment(strategy={"type": "Recreate", "rollingUpdate": {"maxSurge": 1}})
    assert errors(recreate) == [
        "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"
    ]
    unknown = deployment(strategy={"type": "BlueGreen"})
    assert errors(unknown) == [
        'spec.strategy.type: Unsupported value: "BlueGreen": supported values: "Recreate", "RollingUpdate"'
    ]


def test_template_restart_policy_must_be_always() -> None:
    obj = deployment()
    obj["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    assert errors(obj) == [
        'spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always"'
    ]


def test_replicaset() -> None:
    rs = deployment()
    rs["kind"] = "ReplicaSet"
    del rs["spec"]["replicas"]
    spec = apply_defaults(rs)["spec"]
    assert spec["replicas"] == 1 and "strategy" not in spec and "revisionHistoryLimit" not in spec
    assert errors(rs) == []
    rs["spec"]["strategy"] = {}
    assert errors(rs) == ["spec.strategy: Unknown field"]


def test_unknown_fields_are_reported() -> None:
    obj = deployment()
    obj["spec"]["template"]["spec"]["containers"][0]["prots"] = [{"containerPort": 80}]
    obj["spec"]["replica"] = 2
    assert errors(obj) == [
        "spec.replica: Unknown field",
        "spec.template.spec.containers[0].prots: Unknown field",
    ]


def test_pod_container_rules() -> None:
    obj = pod(
        containers=[
            {"name": "App", "image": ""},
            {"name": "app2", "image": "x", "restartPolicy": "Always"},
            {"name": "app2", "image": "x"},
        ]
    )
    assert errors(obj) == [
        'spec.containers[0].name: Invalid value: "App": a lowercase RFC 1123 label must consist of lower case '
        "alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  "
        "or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        "spec.containers[0].image: Required value",
        "spec.containers[1].restartPolicy: Forbidden: may not be set for non-init containers",
        'spec.containers[2].name: Duplicate value: "app2"',
    ]
    assert errors(pod(containers=[])) == ["spec.containers: Required value"]


def test_probe_rules() -> None:
    c = {
        "name": "a",
        "image": "x",
        "readinessProbe": {"httpGet": {"port": 0}, "tcpSocket": {"port": 80}},
        "livenessProbe": {"periodSeconds": -1, "successThreshold": 2},
    }
    assert errors(pod(containers=[c])) == [
        "spec.containers[0].livenessProbe: Required value: must specify a handler type",
        "spec.containers[0].livenessProbe.periodSeconds: Invalid value: -1: must be greater than or equal to 0",
        "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
        "spec.containers[0].readinessProbe.httpGet.port: Invalid value: 0: must be between 1 and 65535, inclusive",
        "spec.containers[0].readinessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type",
    ]


def test_env_rules() -> None:
    env = [
        {"name": "A", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}},
        {"name": "D", "valueFrom": {}},
    ]
    assert errors(pod(containers=[{"name": "a", "image": "x", "env": env}])) == [
        'spec.containers[0].env[0].valueFrom: Invalid value: "": may not be specified when `value` is not empty',
        'spec.containers[0].env[2].valueFrom.fieldRef.fieldPath: Invalid value: "spec.bogus": error converting '
        "fieldPath: field label not supported: spec.bogus",
        'spec.containers[0].env[3].valueFrom: Invalid value: "": must specify one of: `fieldRef`, '
        "`resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
    ]


def test_pod_spec_rules() -> None:
    obj = pod(
        restartPolicy="Sometimes",
        dnsPolicy="None",
        terminationGracePeriodSeconds=-5,
        hostname="Host",
        nodeSelector={"zone": "eu west"},
    )
    assert errors(obj) == [
        "spec.terminationGracePeriodSeconds: Invalid value: -5: must be greater than or equal to 0",
        'spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"',
        f'spec.nodeSelector: Invalid value: "eu west": {LABEL_VALUE_MSG}',
        "spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None",
        'spec.hostname: Invalid value: "Host": a lowercase RFC 1123 label must consist of lower case alphanumeric '
        "characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
        "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
    ]


def test_dns_config_limits() -> None:
    obj = pod(dnsConfig={"nameservers": ["1.1.1.1", "8.8.8.8", "9.9.9.9", "nope"], "searches": ["a.local"]})
    assert errors(obj) == [
        'spec.dnsConfig.nameservers: Invalid value: []string{"1.1.1.1", "8.8.8.8", "9.9.9.9", "nope"}: '
        "must not have more than 3 nameservers",
        'spec.dnsConfig.nameservers[3]: Invalid value: "nope": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)',
    ]


def test_node_affinity_rules() -> None:
    terms = [
        {
            "matchExpressions": [
                {"key": "zone", "operator": "In", "values": []},
                {"key": "cpu", "operator": "Gt", "values": ["4", "8"]},
                {"key": "gpu", "operator": "Exists"},
                {"key": "disk", "operator": "Has"},
            ]
        }
    ]
    obj = pod(
        affinity={
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}
        }
    )
    base = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions"
    assert errors(obj) == [
        f"{base}[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
        f"{base}[1].values: Required value: must be specified single value when `operator` is 'Lt' or 'Gt'",
        f'{base}[3].operator: Invalid value: "Has": not a valid selector operator',
    ]


def test_volume_mounts_need_volumes() -> None:
    obj = pod(
        volumes=[
            {"name": "data", "emptyDir": {}},
            {"name": "data", "configMap": {"name": "c"}, "secret": {}},
        ],
        containers=[{"name": "a", "image": "x", "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]}],
    )
    assert errors(obj) == [
        "spec.volumes[1].secret: Forbidden: may not specify more than 1 volume type",
        'spec.volumes[1].name: Duplicate value: "data"',
        'spec.containers[0].volumeMounts[0].name: Not found: "cache"',
    ]


def test_pod_spec_is_immutable_except_images() -> None:
    old = validate_and_default(Document("p.yaml", 0, pod()))
    old["spec"]["nodeName"] = "node-a"  # the scheduler's binding: part of the stored object
    image_only = copy.deepcopy(old)
    image_only["spec"]["containers"][0]["image"] = "busybox:1.36"
    assert validate(image_only, old) == []

    port_added = copy.deepcopy(old)
    port_added["spec"]["containers"][0]["ports"] = [{"containerPort": 80, "protocol": "TCP"}]
    [err] = validate(port_added, old)
    assert err.path == "spec"
    assert err.message.startswith(
        "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
        "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing "
        "tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
    )
    assert err.message.endswith("differs at: spec.containers[0].ports")

    more = copy.deepcopy(old)
    more["spec"]["containers"].append(apply_defaults(pod())["spec"]["containers"][0] | {"name": "b"})
    assert [str(e) for e in validate(more, old)] == [
        "spec.containers: Forbidden: pod updates may not add or remove containers"
    ]


def test_metadata_name_is_immutable() -> None:
    old = apply_defaults(pod())
    new = copy.deepcopy(old)
    new["metadata"]["namespace"] = "other"
    assert [str(e) for e in validate(new, old)] == [
        'metadata.namespace: Invalid value: "other": field is immutable'
    ]


def test_configmap_rules() -> None:
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cfg"},
        "data": {"good.key": "1", "bad/key": "2", "both": "x"},
        "binaryData": {"both": "eA=="},
    }
    assert errors(cm) == [
        'data[bad/key]: Invalid value: "bad/key": a valid config key must consist of alphanumeric characters, '
        "'-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is "
        "'[-._a-zA-Z0-9]+')",
        'binaryData[both]: Invalid value: "both": duplicate key in both data and binaryData',
    ]
    big = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "big"},
        "data": {"a": "x" * (1024 * 1024 + 1)},
    }
    assert errors(big) == ["Too long: must have at most 1048576 bytes"]


def test_immutable_configmap() -> None:
    old = apply_defaults(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "c"},
            "data": {"a": "1"},
            "immutable": True,
        }
    )
    new = copy.deepcopy(old)
    new["data"]["a"] = "2"
    assert errors(new, old) == ["data: Forbidden: field is immutable when `immutable` is set"]


def test_secret_defaults_and_rules() -> None:
    raw = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s"},
        "data": {"a": "b2xk"},
        "stringData": {"a": "new"},
    }
    obj = apply_defaults(raw)
    assert obj["type"] == "Opaque" and obj["data"] == {"a": "bmV3"} and "stringData" not in obj
    assert validate(obj) == []

    tls = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "t"},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": "!!"},
    }
    assert errors(tls) == [
        'data[tls.crt]: Invalid value: "<secret contents redacted>": illegal base64 data at input byte 0',
        "data[tls.key]: Required value",
    ]
    changed = copy.deepcopy(apply_defaults(tls))
    changed["type"] = "Opaque"
    assert 'type: Invalid value: "Opaque": field is immutable' in errors(changed, tls)


def test_unknown_kind_and_wrong_api_version() -> None:
    [err] = validate({"apiVersion": "v1", "kind": "Frob", "metadata": {"name": "x"}})
    assert err.path == "" and err.message.startswith(
        'no matches for kind "Frob" in version "v1"; kubewire supports: v1 Namespace'
    )
    [err] = validate({"apiVersion": "extensions/v1beta1", "kind": "Ingress", "metadata": {"name": "x"}})
    assert "Ingress is served as networking.k8s.io/v1" in err.message


def test_other_kinds_get_metadata_validation_only() -> None:
    np = {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "Web"},
          "spec": {"anything": True}}
    errs = errors(np)
    assert len(errs) == 1 and errs[0].startswith('metadata.name: Invalid value: "Web": a lowercase RFC 1123 subdomain')
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "namespace": "default"}}
    assert "namespace" not in apply_defaults(node)["metadata"] and errors(node) == []


def test_register_validator_extends_a_kind() -> None:
    def no_external_ips(obj: dict, old: dict | None) -> list[FieldError]:
        return [FieldError("spec.externalIPs", "Forbidden")] if obj.get("spec", {}).get("externalIPs") else []

    saved = VALIDATORS.get("Service")
    register_validator("Service", no_external_ips)
    try:
        svc = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"externalIPs": ["1.2.3.4"]},
        }
        assert errors(svc) == ["spec.externalIPs: Forbidden"]
    finally:
        VALIDATORS.pop("Service")
        if saved is not None:
            VALIDATORS["Service"] = saved


def test_validate_and_default_raises_manifest_error_naming_the_document() -> None:
    text = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: fine}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: also-fine}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api-gateway, namespace: production}
spec:
  replicas: -1
  selector: {matchLabels: {app: gw}}
  template:
    metadata: {labels: {app: gw}}
    spec:
      containers: [{name: gw, image: envoy}]
"""
    docs = load_text(text, "manifests/x.yaml")
    validate_and_default(docs[0])
    validate_and_default(docs[1])
    with pytest.raises(ManifestError) as info:
        validate_and_default(docs[2])
    err = info.value
    assert (err.source, err.index, err.kind, err.name, err.namespace) == (
        "manifests/x.yaml",
        2,
        "Deployment",
        "api-gateway",
        "production",
    )
    assert str(err) == (
        "error: manifests/x.yaml: document 2 (Deployment production/api-gateway): "
        "spec.replicas: Invalid value: -1: must be greater than or equal to 0"
    )
