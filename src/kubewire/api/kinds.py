"""The kinds kubewire serves, and how manifests and CLI words name them.

One table feeds both directions: a manifest's (apiVersion, kind) and a kubectl-style resource word
("po", "deployments.apps"), so `kubewire get` and `kubewire apply` can never disagree about what
exists.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KindInfo:
    kind: str
    api_version: str  # "v1" for the core group, else "<group>/<version>"
    plural: str
    short_names: tuple[str, ...]
    namespaced: bool

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def singular(self) -> str:
        return self.kind.lower()


KINDS: tuple[KindInfo, ...] = (
    KindInfo("Namespace", "v1", "namespaces", ("ns",), False),
    KindInfo("Node", "v1", "nodes", ("no",), False),
    KindInfo("Pod", "v1", "pods", ("po",), True),
    KindInfo("ConfigMap", "v1", "configmaps", ("cm",), True),
    KindInfo("Secret", "v1", "secrets", (), True),
    KindInfo("Service", "v1", "services", ("svc",), True),
    KindInfo("Deployment", "apps/v1", "deployments", ("deploy",), True),
    KindInfo("ReplicaSet", "apps/v1", "replicasets", ("rs",), True),
    KindInfo("Endpoints", "v1", "endpoints", ("ep",), True),
    KindInfo("Event", "v1", "events", ("ev",), True),
    KindInfo("EndpointSlice", "discovery.k8s.io/v1", "endpointslices", (), True),
    KindInfo("NetworkPolicy", "networking.k8s.io/v1", "networkpolicies", ("netpol",), True),
    KindInfo("Ingress", "networking.k8s.io/v1", "ingresses", ("ing",), True),
    KindInfo("IngressClass", "networking.k8s.io/v1", "ingressclasses", (), False),
)

_BY_KIND: dict[str, KindInfo] = {k.kind: k for k in KINDS}


class UnknownKindError(LookupError):
    """A manifest names an (apiVersion, kind) kubewire does not serve.

    `field` says which of the two is wrong, so callers can point at it.
    """

    def __init__(self, api_version: str, kind: str) -> None:
        self.api_version = api_version
        self.kind = kind
        self.served_as: KindInfo | None = _BY_KIND.get(kind)
        self.field = "apiVersion" if self.served_as else "kind"
        super().__init__(str(self))

    def __str__(self) -> str:
        head = f'no matches for kind "{self.kind}" in version "{self.api_version}"'
        if self.served_as:
            return f"{head}: {self.kind} is served as {self.served_as.api_version} (use apiVersion: {self.served_as.api_version})"
        hint = ""
        near = [k for k in KINDS if k.kind.lower() == self.kind.lower()]
        if near:
            hint = f' (kinds are case-sensitive: did you mean "{near[0].kind}"?)'
        return f"{head}{hint}; kubewire supports: {supported_pairs()}"


class UnknownResourceError(LookupError):
    """A CLI resource word that names nothing kubewire serves."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(str(self))

    def __str__(self) -> str:
        return f'error: the server doesn\'t have a resource type "{self.name}"'


def supported_pairs() -> str:
    return ", ".join(f"{k.api_version} {k.kind}" for k in KINDS)


def lookup_kind(api_version: str, kind: str) -> KindInfo:
    """The served kind for a manifest's apiVersion/kind, or UnknownKindError."""
    info = _BY_KIND.get(kind)
    if info is None or info.api_version != api_version:
        raise UnknownKindError(api_version, kind)
    return info


def kind_info(kind: str) -> KindInfo | None:
    """The served kind by kind name alone (objects already in the store need no apiVersion check)."""
    return _BY_KIND.get(kind)


def _words(info: KindInfo) -> set[str]:
    return {info.plural, info.singular, *info.short_names}


def resolve_resource(name: str) -> KindInfo:
    """kubectl's resource words: plural, singular, short name or kind, optionally `.group` or
    `.version.group` qualified ("deployments.apps", "deploy.v1.apps"); case-insensitive."""
    word = name.strip().lower()
    resource, _, qualifier = word.partition(".")
    for info in KINDS:
        if resource not in _words(info) and resource != info.kind.lower():
            continue
        if not qualifier:
            return info
        group, version = info.group, info.version
        if qualifier in (group, f"{version}.{group}") and group:
            return info
        if not group and qualifier == version:
            return info
    raise UnknownResourceError(name)
