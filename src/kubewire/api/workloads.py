"""Pods, Deployments and ReplicaSets (core and apps validation, plus the update rules the
registry strategies add: pod spec immutability, apps/v1 selector immutability)."""

from __future__ import annotations

import copy

from kubewire.api.access import (
    Errs,
    check_known,
    child,
    get_bool,
    get_dict,
    get_int,
    get_int_or_str,
    get_str,
    get_str_map,
    index,
    is_int,
)
from kubewire.api.errors import (
    FieldError,
    GoValue,
    forbidden,
    go_string_map,
    invalid,
    not_supported,
    required,
)
from kubewire.api.meta import (
    OBJECT_META_FIELDS,
    go_label_selector,
    immutable,
    nonnegative,
    selector_is_empty,
    selector_matches,
    template_labels,
    validate_annotations,
    validate_label_selector,
    validate_labels,
)
from kubewire.api.names import inclusive_range_error, is_valid_percent
from kubewire.api.podspec import MAX_INT32, validate_pod_spec

TOP_FIELDS = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})
DEPLOYMENT_SPEC_FIELDS = frozenset(
    {
        "replicas",
        "selector",
        "template",
        "strategy",
        "minReadySeconds",
        "revisionHistoryLimit",
        "paused",
        "progressDeadlineSeconds",
    }
)
REPLICASET_SPEC_FIELDS = frozenset({"replicas", "minReadySeconds", "selector", "template"})

POD_UPDATE_FORBIDDEN = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
    "`spec.tolerations` (only additions to existing tolerations),"
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
)


def _spec(obj: dict | None, errs: Errs) -> dict:
    if not isinstance(obj, dict):
        return {}
    return get_dict(obj, "spec", "", errs) or {}


# --- Pod -------------------------------------------------------------------------------------


def validate_pod(obj: dict, old: dict | None) -> list[FieldError]:
    errs: Errs = []
    check_known(obj, TOP_FIELDS, "", errs)
    validate_pod_spec(_spec(obj, errs), "spec", errs, is_pod=True)
    if old is not None:
        errs.extend(_validate_pod_update(_spec(obj, []), _spec(old, [])))
    return errs


def _validate_pod_update(new: dict, old: dict) -> list[FieldError]:
    """ValidatePodUpdate: only images, activeDeadlineSeconds, added tolerations, removed scheduling
    gates and a negative grace period fixed up to 1 may change."""
    errs: Errs = []
    for name in ("containers", "initContainers"):
        if len(_list(new.get(name))) != len(_list(old.get(name))):
            return [forbidden(child("spec", name), "pod updates may not add or remove containers")]

    dpath = "spec.activeDeadlineSeconds"
    new_deadline, old_deadline = new.get("activeDeadlineSeconds"), old.get("activeDeadlineSeconds")
    if is_int(new_deadline):
        if not 0 <= new_deadline <= MAX_INT32:
            return [invalid(dpath, new_deadline, inclusive_range_error(0, MAX_INT32))]
        if is_int(old_deadline) and old_deadline < new_deadline:
            return [invalid(dpath, new_deadline, "must be less than or equal to previous value")]
    elif new_deadline is None and old_deadline is not None:
        errs.append(invalid(dpath, None, "must not update from a positive integer to nil value"))

    for old_tol in _list(old.get("tolerations")):
        if not any(_same_toleration(old_tol, t) for t in _list(new.get("tolerations"))):
            errs.append(
                forbidden(
                    "spec.tolerations", "existing toleration can not be modified except its tolerationSeconds"
                )
            )
            break

    old_gates = {g.get("name") for g in _list(old.get("schedulingGates")) if isinstance(g, dict)}
    for i, gate in enumerate(_list(new.get("schedulingGates"))):
        name = gate.get("name") if isinstance(gate, dict) else None
        if name not in old_gates:
            errs.append(
                forbidden(
                    child(index("spec.schedulingGates", i), "name"),
                    f"only deletion is allowed, but found new scheduling gate '{name}'",
                )
            )

    munged = copy.deepcopy(new)
    for name in ("containers", "initContainers"):
        for c, old_c in zip(_list(munged.get(name)), _list(old.get(name)), strict=False):
            if isinstance(c, dict) and isinstance(old_c, dict):
                _copy_key(old_c, c, "image")
    for name in ("activeDeadlineSeconds", "tolerations", "schedulingGates", "ephemeralContainers"):
        _copy_key(old, munged, name)
    old_grace = old.get("terminationGracePeriodSeconds")
    if is_int(old_grace) and old_grace < 0 and new.get("terminationGracePeriodSeconds") == 1:
        munged["terminationGracePeriodSeconds"] = old_grace
    if munged != old:
        changed = ", ".join(_diff_paths(munged, old, "spec"))
        errs.append(forbidden("spec", f"{POD_UPDATE_FORBIDDEN}; differs at: {changed}"))
    return errs


def _list(v: object) -> list:
    return v if isinstance(v, list) else []


def _copy_key(src: dict, dst: dict, name: str) -> None:
    if name in src:
        dst[name] = copy.deepcopy(src[name])
    else:
        dst.pop(name, None)


def _same_toleration(old: object, new: object) -> bool:
    if not isinstance(old, dict) or not isinstance(new, dict):
        return old == new
    return {k: v for k, v in old.items() if k != "tolerationSeconds"} == {
        k: v for k, v in new.items() if k != "tolerationSeconds"
    }


def _diff_paths(a: object, b: object, path: str, limit: int = 5) -> list[str]:
    """Where two specs differ, so a forbidden update says what it touched (upstream prints a diff)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in list(a) + [k for k in b if k not in a]:
            if a.get(k) != b.get(k):
                out.extend(_diff_paths(a.get(k), b.get(k), child(path, str(k)), limit))
            if len(out) >= limit:
                break
        return out[:limit]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                out.extend(_diff_paths(x, y, index(path, i), limit))
        return out[:limit]
    return [path]


# --- Deployment and ReplicaSet ---------------------------------------------------------------


def validate_deployment(obj: dict, old: dict | None) -> list[FieldError]:
    errs: Errs = []
    check_known(obj, TOP_FIELDS, "", errs)
    spec = _spec(obj, errs)
    check_known(spec, DEPLOYMENT_SPEC_FIELDS, "spec", errs)
    nonnegative(get_int(spec, "replicas", "spec", errs), "spec.replicas", errs)
    _validate_selector_and_template(spec, errs)
    _validate_strategy(spec, errs)
    min_ready = get_int(spec, "minReadySeconds", "spec", errs)
    nonnegative(min_ready, "spec.minReadySeconds", errs)
    nonnegative(get_int(spec, "revisionHistoryLimit", "spec", errs), "spec.revisionHistoryLimit", errs)
    deadline = get_int(spec, "progressDeadlineSeconds", "spec", errs)
    if deadline is not None:
        nonnegative(deadline, "spec.progressDeadlineSeconds", errs)
        if deadline <= (min_ready or 0):
            errs.append(
                invalid("spec.progressDeadlineSeconds", deadline, "must be greater than minReadySeconds")
            )
    get_bool(spec, "paused", "spec", errs)
    if old is not None:
        errs.extend(_selector_immutable(spec, _spec(old, [])))
    return errs


def validate_replicaset(obj: dict, old: dict | None) -> list[FieldError]:
    errs: Errs = []
    check_known(obj, TOP_FIELDS, "", errs)
    spec = _spec(obj, errs)
    check_known(spec, REPLICASET_SPEC_FIELDS, "spec", errs)
    nonnegative(get_int(spec, "replicas", "spec", errs), "spec.replicas", errs)
    nonnegative(get_int(spec, "minReadySeconds", "spec", errs), "spec.minReadySeconds", errs)
    _validate_selector_and_template(spec, errs)
    if old is not None:
        errs.extend(_selector_immutable(spec, _spec(old, [])))
    return errs


def _selector_immutable(new: dict, old: dict) -> list[FieldError]:
    sel = new.get("selector")
    return immutable(
        sel, old.get("selector"), "spec.selector", go_label_selector(sel if isinstance(sel, dict) else None)
    )


def _validate_selector_and_template(spec: dict, errs: Errs) -> None:
    spath = "spec.selector"
    selector = get_dict(spec, "selector", "spec", errs)
    selector_ok = True
    if spec.get("selector") is None:
        errs.append(required(spath))
    elif selector is None:
        selector_ok = False
    else:
        sel_errs: Errs = []
        validate_label_selector(selector, spath, sel_errs)
        errs.extend(sel_errs)
        # Upstream says "deployment" for ReplicaSets too.
        if selector_is_empty(selector):
            errs.append(
                invalid(spath, go_label_selector(selector), "empty selector is invalid for deployment")
            )
        if any(e.message != "Unknown field" for e in sel_errs):
            selector_ok = False
            errs.append(invalid(spath, go_label_selector(selector), "invalid label selector"))
    if selector_ok:
        _validate_template(spec, selector, errs)


def _validate_template(spec: dict, selector: dict | None, errs: Errs) -> None:
    """ValidatePodTemplateSpecForReplicaSet. Template label errors are reported at
    `spec.template.labels` (not `.metadata.labels`), exactly as upstream does."""
    tpath = "spec.template"
    template = get_dict(spec, "template", "spec", errs) or {}
    check_known(template, {"metadata", "spec"}, tpath, errs)
    labels = template_labels(template)
    if (selector is None or not selector_is_empty(selector)) and not selector_matches(selector, labels):
        errs.append(
            invalid(
                child(tpath, "metadata.labels"),
                GoValue(go_string_map(labels)),
                "`selector` does not match template `labels`",
            )
        )
    meta = get_dict(template, "metadata", tpath, errs) or {}
    check_known(meta, OBJECT_META_FIELDS, child(tpath, "metadata"), errs)
    validate_labels(get_str_map(meta, "labels", child(tpath, "metadata"), errs), child(tpath, "labels"), errs)
    validate_annotations(
        get_str_map(meta, "annotations", child(tpath, "metadata"), errs), child(tpath, "annotations"), errs
    )
    pod_spec = get_dict(template, "spec", tpath, errs) or {}
    spath = child(tpath, "spec")
    validate_pod_spec(pod_spec, spath, errs, is_pod=False)
    policy = pod_spec.get("restartPolicy")
    if policy != "Always":
        errs.append(
            not_supported(child(spath, "restartPolicy"), "" if policy is None else policy, ("Always",))
        )
    if pod_spec.get("activeDeadlineSeconds") is not None:
        errs.append(
            forbidden(
                child(spath, "activeDeadlineSeconds"), "activeDeadlineSeconds in ReplicaSet is not Supported"
            )
        )


def _int_or_percent_value(v: int | str | None) -> int:
    """getIntOrPercentValue: "25%" -> 25, 3 -> 3, anything unparsable -> 0."""
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        digits = v[:-1] if v.endswith("%") else v
        return int(digits) if digits.isdigit() else 0
    return 0


def _validate_int_or_percent(v: int | str | None, path: str, errs: Errs) -> None:
    if isinstance(v, str):
        # IntOrString prints through its String() method: no quotes.
        errs.extend(invalid(path, GoValue(v), m) for m in is_valid_percent(v))
    elif isinstance(v, int):
        nonnegative(v, path, errs)


def _validate_strategy(spec: dict, errs: Errs) -> None:
    path = "spec.strategy"
    strategy = get_dict(spec, "strategy", "spec", errs) or {}
    check_known(strategy, {"type", "rollingUpdate"}, path, errs)
    kind = get_str(strategy, "type", path, errs) or ""
    rolling = get_dict(strategy, "rollingUpdate", path, errs)
    rpath = child(path, "rollingUpdate")
    if kind == "Recreate":
        if strategy.get("rollingUpdate") is not None:
            errs.append(forbidden(rpath, "may not be specified when strategy `type` is 'Recreate'"))
    elif kind == "RollingUpdate":
        if rolling is None:
            errs.append(required(rpath, "this should be defaulted and never be nil"))
            return
        check_known(rolling, {"maxUnavailable", "maxSurge"}, rpath, errs)
        unavailable = get_int_or_str(rolling, "maxUnavailable", rpath, errs)
        surge = get_int_or_str(rolling, "maxSurge", rpath, errs)
        upath = child(rpath, "maxUnavailable")
        _validate_int_or_percent(unavailable, upath, errs)
        _validate_int_or_percent(surge, child(rpath, "maxSurge"), errs)
        if _int_or_percent_value(unavailable) == 0 and _int_or_percent_value(surge) == 0:
            errs.append(invalid(upath, GoValue(str(unavailable or 0)), "may not be 0 when `maxSurge` is 0"))
        if isinstance(unavailable, str) and not is_valid_percent(unavailable) and int(unavailable[:-1]) > 100:
            errs.append(invalid(upath, GoValue(unavailable), "must not be greater than 100%"))
    else:
        errs.append(not_supported(child(path, "type"), kind, ("Recreate", "RollingUpdate")))
