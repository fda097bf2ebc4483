"""Validate and default objects as the API server does on create and update.

`validate` expects an already-defaulted object, as upstream validation does: on a raw manifest it
reports fields like `imagePullPolicy` as missing. `validate_and_default` is the usual entry point.

Per-kind rules live in small modules and are wired here through two registries, so adding a kind
is one `register_validator` (and, if needed, `register_name_rule` / `register_defaulter`) call.
"""

from __future__ import annotations

from collections.abc import Callable

from kubewire.api.access import get_str
from kubewire.api.config import validate_configmap, validate_namespace, validate_secret
from kubewire.api.defaults import DEFAULTERS, apply_defaults, register_defaulter
from kubewire.api.endpoints import canonicalize_endpoints, validate_endpoints
from kubewire.api.errors import FieldError, ManifestError, invalid, required
from kubewire.api.kinds import UnknownKindError, lookup_kind
from kubewire.api.loader import Document
from kubewire.api.meta import validate_object_meta, validate_object_meta_update
from kubewire.api.names import NameRule, name_is_dns1035_label, name_is_dns_label, name_is_dns_subdomain
from kubewire.api.networkpolicy import validate_networkpolicy
from kubewire.api.service import validate_endpointslice, validate_service
from kubewire.api.workloads import validate_deployment, validate_pod, validate_replicaset

Validator = Callable[[dict, dict | None], list[FieldError]]
"""(object, stored object or None) -> errors for everything but metadata, which validate() checks."""

VALIDATORS: dict[str, Validator] = {
    "Namespace": validate_namespace,
    "Pod": validate_pod,
    "Deployment": validate_deployment,
    "ReplicaSet": validate_replicaset,
    "ConfigMap": validate_configmap,
    "Secret": validate_secret,
    "Service": validate_service,
    "Endpoints": validate_endpoints,
    "EndpointSlice": validate_endpointslice,
    "NetworkPolicy": validate_networkpolicy,
}

# What the API server's strategies do to a valid object before storing it (Canonicalize).
CANONICALIZERS: dict[str, Callable[[dict], None]] = {
    "Endpoints": canonicalize_endpoints,
}

# metadata.name rules; kinds not listed use DNS-1123 subdomain, the API's common rule.
NAME_RULES: dict[str, NameRule] = {
    "Namespace": name_is_dns_label,
    "Service": name_is_dns1035_label,
}

__all__ = [
    "DEFAULTERS",
    "NAME_RULES",
    "VALIDATORS",
    "Validator",
    "apply_defaults",
    "register_defaulter",
    "register_name_rule",
    "register_validator",
    "validate",
    "validate_and_default",
]


def register_validator(kind: str, fn: Validator) -> None:
    VALIDATORS[kind] = fn


def register_name_rule(kind: str, rule: NameRule) -> None:
    NAME_RULES[kind] = rule


def validate(obj: dict, old: dict | None = None) -> list[FieldError]:
    """Every problem the API server would report for creating obj (or, with `old`, for replacing
    the stored `old` with it), in upstream's order: type, metadata, then the kind's own rules."""
    if not isinstance(obj, dict):
        return [invalid("", obj, "an object must be a mapping with apiVersion, kind and metadata")]
    errs: list[FieldError] = []
    api_version = get_str(obj, "apiVersion", "", errs)
    kind = get_str(obj, "kind", "", errs)
    if obj.get("apiVersion") in (None, ""):
        errs.append(required("apiVersion"))
    if obj.get("kind") in (None, ""):
        errs.append(required("kind"))
    if errs or api_version is None or kind is None:
        return errs
    try:
        info = lookup_kind(api_version, kind)
    except UnknownKindError as e:
        return [FieldError("", str(e))]

    meta = obj.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        return [invalid("metadata", meta, "must be of type object")]
    rule = NAME_RULES.get(kind, name_is_dns_subdomain)
    errs.extend(validate_object_meta(meta, namespaced=info.namespaced, name_rule=rule))
    if old is not None:
        old_meta = old.get("metadata") if isinstance(old.get("metadata"), dict) else None
        errs.extend(validate_object_meta_update(meta, old_meta))
    fn = VALIDATORS.get(kind)
    if fn is not None:
        errs.extend(fn(obj, old))
    return errs


def validate_and_default(doc: Document, old: dict | None = None, *, namespace: str = "default") -> dict:
    """The object the store should keep for this document, or ManifestError naming the file,
    document, kind and name with every field error."""
    obj = apply_defaults(doc.obj, namespace=namespace)
    errs = validate(obj, old)
    if errs:
        meta = obj.get("metadata") if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict) else {}
        kind = obj.get("kind") if isinstance(obj, dict) and isinstance(obj.get("kind"), str) else None
        name = meta.get("name") if isinstance(meta.get("name"), str) else meta.get("generateName")
        ns = meta.get("namespace") if isinstance(meta.get("namespace"), str) else None
        raise ManifestError(
            doc.source,
            doc.index,
            kind,
            name if isinstance(name, str) else None,
            errs,
            namespace=ns,
            item=doc.item,
        )
    canonical = CANONICALIZERS.get(obj.get("kind", ""))
    if canonical is not None:
        canonical(obj)
    return obj
