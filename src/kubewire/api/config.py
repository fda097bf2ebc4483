"""Namespaces, ConfigMaps and Secrets."""

from __future__ import annotations

import base64
import binascii
import json
import re

from kubewire.api.access import Errs, check_known, get_bool, get_dict, get_str, get_str_list, get_str_map, key
from kubewire.api.errors import FieldError, forbidden, invalid, required, too_long
from kubewire.api.meta import immutable
from kubewire.api.names import is_config_map_key, is_qualified_name

MAX_DATA_SIZE = 1024 * 1024  # both ConfigMaps and Secrets (core.MaxSecretSize)
REDACTED = "<secret contents redacted>"
IMMUTABLE_SET = "field is immutable when `immutable` is set"

NAMESPACE_FIELDS = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})
CONFIGMAP_FIELDS = frozenset({"apiVersion", "kind", "metadata", "data", "binaryData", "immutable"})
SECRET_FIELDS = frozenset({"apiVersion", "kind", "metadata", "data", "stringData", "type", "immutable"})

_B64_CHARS = re.compile(r"[^A-Za-z0-9+/=]")


def decode_base64(value: str) -> tuple[bytes | None, str]:
    """Go's StdEncoding (newlines ignored): the bytes, or None and Go's error text."""
    text = value.replace("\r", "").replace("\n", "")
    try:
        return base64.b64decode(text, validate=True), ""
    except (binascii.Error, ValueError):
        bad = _B64_CHARS.search(text)
        at = bad.start() if bad else len(text) - len(text) % 4
        return None, f"illegal base64 data at input byte {at}"


# --- Namespace -------------------------------------------------------------------------------

_STANDARD_FINALIZERS = frozenset({"kubernetes"})


def validate_namespace(obj: dict, old: dict | None) -> list[FieldError]:
    errs: Errs = []
    check_known(obj, NAMESPACE_FIELDS, "", errs)
    spec = get_dict(obj, "spec", "", errs) or {}
    check_known(spec, {"finalizers"}, "spec", errs)
    for f in get_str_list(spec, "finalizers", "spec", errs) or []:
        msgs = is_qualified_name(f)
        errs.extend(invalid("spec.finalizers", f, m) for m in msgs)
        if not msgs and "/" not in f and f not in _STANDARD_FINALIZERS:
            errs.append(
                invalid(
                    "spec.finalizers",
                    f,
                    "name is neither a standard finalizer name nor is it fully qualified",
                )
            )
    return errs


# --- ConfigMap -------------------------------------------------------------------------------


def validate_configmap(obj: dict, old: dict | None) -> list[FieldError]:
    errs: Errs = []
    check_known(obj, CONFIGMAP_FIELDS, "", errs)
    data = get_str_map(obj, "data", "", errs) or {}
    binary = get_str_map(obj, "binaryData", "", errs) or {}
    total = 0
    for k, v in data.items():
        errs.extend(invalid(key("data", k), k, m) for m in is_config_map_key(k))
        total += len(v.encode())
    for k, v in binary.items():
        errs.extend(invalid(key("binaryData", k), k, m) for m in is_config_map_key(k))
        raw, problem = decode_base64(v)
        if raw is None:
            errs.append(invalid(key("binaryData", k), v, problem))
        total += len(raw or b"")
        if k in data:
            errs.append(invalid(key("binaryData", k), k, "duplicate key in both data and binaryData"))
    if total > MAX_DATA_SIZE:
        errs.append(too_long("", MAX_DATA_SIZE))
    get_bool(obj, "immutable", "", errs)
    if old is not None:
        errs.extend(_immutable_data(obj, old, ("data", "binaryData")))
    return errs


def _immutable_data(new: dict, old: dict, fields: tuple[str, ...]) -> list[FieldError]:
    if old.get("immutable") is not True:
        return []
    errs: Errs = []
    if new.get("immutable") is not True:
        errs.append(forbidden("immutable", IMMUTABLE_SET))
    errs.extend(
        forbidden(name, IMMUTABLE_SET)
        for name in fields
        if (new.get(name) or None) != (old.get(name) or None)
    )
    return errs


# --- Secret ----------------------------------------------------------------------------------


def validate_secret(obj: dict, old: dict | None) -> list[FieldError]:
    errs: Errs = []
    check_known(obj, SECRET_FIELDS, "", errs)
    encoded = get_str_map(obj, "data", "", errs) or {}
    data: dict[str, bytes] = {}
    total = 0
    for k, v in encoded.items():
        errs.extend(invalid(key("data", k), k, m) for m in is_config_map_key(k))
        raw, problem = decode_base64(v)
        if raw is None:
            errs.append(invalid(key("data", k), REDACTED, problem))
            raw = b""
        data[k] = raw
        total += len(raw)
    # stringData normally disappears in defaulting; if it is still here, hold it to the same rules.
    for k, v in (get_str_map(obj, "stringData", "", errs) or {}).items():
        errs.extend(invalid(key("stringData", k), k, m) for m in is_config_map_key(k))
        data.setdefault(k, v.encode())
        total += len(v.encode())
    if total > MAX_DATA_SIZE:
        errs.append(too_long("data", MAX_DATA_SIZE))
    kind = get_str(obj, "type", "", errs) or "Opaque"
    errs.extend(_validate_secret_type(kind, data, obj))
    get_bool(obj, "immutable", "", errs)
    if old is not None:
        errs.extend(immutable(obj.get("type") or "Opaque", old.get("type") or "Opaque", "type"))
        errs.extend(_immutable_data(obj, old, ("data",)))
    return errs


def _validate_secret_type(kind: str, data: dict[str, bytes], obj: dict) -> list[FieldError]:
    errs: Errs = []
    if kind == "kubernetes.io/service-account-token":
        meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        annotations = meta.get("annotations") if isinstance(meta.get("annotations"), dict) else {}
        if not annotations.get("kubernetes.io/service-account.name"):
            errs.append(required(key("metadata.annotations", "kubernetes.io/service-account.name")))
    elif kind in ("kubernetes.io/dockercfg", "kubernetes.io/dockerconfigjson"):
        name = ".dockercfg" if kind == "kubernetes.io/dockercfg" else ".dockerconfigjson"
        if name not in data:
            errs.append(required(key("data", name)))
        else:
            try:
                json.loads(data[name] or b"null")
            except ValueError as e:
                errs.append(invalid(key("data", name), REDACTED, str(e)))
    elif kind == "kubernetes.io/basic-auth":
        if "username" not in data and "password" not in data:
            errs.append(required(key("data", "username")))
            errs.append(required(key("data", "password")))
    elif kind == "kubernetes.io/ssh-auth":
        if not data.get("ssh-privatekey"):
            errs.append(required(key("data", "ssh-privatekey")))
    elif kind == "kubernetes.io/tls":
        for name in ("tls.crt", "tls.key"):
            if name not in data:
                errs.append(required(key("data", name)))
    return errs
