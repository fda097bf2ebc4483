"""ObjectMeta, labels, annotations and label selectors: the parts every kind shares."""

from __future__ import annotations

import random

from kubewire.api.access import (
    Errs,
    check_known,
    child,
    dict_items,
    get_dict,
    get_int,
    get_list,
    get_str,
    get_str_list,
    get_str_map,
    index,
)
from kubewire.api.errors import (
    FieldError,
    GoValue,
    forbidden,
    go_quote,
    go_string_map,
    go_string_slice,
    invalid,
    required,
    too_long,
)
from kubewire.api.names import NameRule, is_label_value, is_qualified_name, name_is_dns_label

OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)
LABEL_SELECTOR_FIELDS = frozenset({"matchLabels", "matchExpressions"})
REQUIREMENT_FIELDS = frozenset({"key", "operator", "values"})

TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024
IS_NEGATIVE = "must be greater than or equal to 0"
FIELD_IMMUTABLE = "field is immutable"


def nonnegative(value: int | None, path: str, errs: Errs) -> None:
    if value is not None and value < 0:
        errs.append(invalid(path, value, IS_NEGATIVE))


def validate_labels(labels: dict[str, str] | None, path: str, errs: Errs) -> None:
    """Keys and values; errors point at the map (not the key), as upstream does."""
    for k, v in (labels or {}).items():
        errs.extend(invalid(path, k, m) for m in is_qualified_name(k))
        errs.extend(invalid(path, v, m) for m in is_label_value(v))


def validate_annotations(annotations: dict[str, str] | None, path: str, errs: Errs) -> None:
    total = 0
    for k, v in (annotations or {}).items():
        # Annotation keys follow label-key rules, except that case does not matter.
        errs.extend(invalid(path, k, m) for m in is_qualified_name(k.lower()))
        total += len(k.encode()) + len(v.encode())
    if total > TOTAL_ANNOTATION_SIZE_LIMIT:
        errs.append(too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT))


def validate_object_meta(
    meta: dict | None, *, namespaced: bool, name_rule: NameRule, path: str = "metadata"
) -> list[FieldError]:
    """Create-time metadata checks (apimachinery ValidateObjectMetaAccessor)."""
    errs: Errs = []
    meta = meta or {}
    check_known(meta, OBJECT_META_FIELDS, path, errs)
    name = get_str(meta, "name", path, errs)
    generate_name = get_str(meta, "generateName", path, errs)
    if generate_name:
        errs.extend(
            invalid(child(path, "generateName"), generate_name, m) for m in name_rule(generate_name, True)
        )
    if name:
        errs.extend(invalid(child(path, "name"), name, m) for m in name_rule(name, False))
    elif not generate_name:
        errs.append(required(child(path, "name"), "name or generateName is required"))
    namespace = get_str(meta, "namespace", path, errs)
    if namespaced:
        if not namespace:
            errs.append(required(child(path, "namespace")))
        else:
            errs.extend(invalid(child(path, "namespace"), namespace, m) for m in name_is_dns_label(namespace))
    elif namespace:
        errs.append(forbidden(child(path, "namespace"), "not allowed on this type"))
    nonnegative(get_int(meta, "generation", path, errs), child(path, "generation"), errs)
    validate_labels(get_str_map(meta, "labels", path, errs), child(path, "labels"), errs)
    validate_annotations(get_str_map(meta, "annotations", path, errs), child(path, "annotations"), errs)
    for f in get_str_list(meta, "finalizers", path, errs) or []:
        errs.extend(invalid(child(path, "finalizers"), f, m) for m in is_qualified_name(f))
    get_list(meta, "ownerReferences", path, errs)
    return errs


def validate_object_meta_update(
    new: dict | None, old: dict | None, path: str = "metadata"
) -> list[FieldError]:
    """Name and namespace cannot change. uid, resourceVersion and timestamps are the store's to
    carry over (the API server copies them from the old object before validating)."""
    errs: Errs = []
    new, old = new or {}, old or {}
    for name in ("name", "namespace"):
        if (new.get(name) or "") != (old.get(name) or ""):
            errs.append(invalid(child(path, name), new.get(name) or "", FIELD_IMMUTABLE))
    return errs


def immutable(new: object, old: object, path: str, value: object | None = None) -> list[FieldError]:
    """ValidateImmutableField: compares values; reports `value` (default `new`) if they differ."""
    if new == old:
        return []
    return [invalid(path, new if value is None else value, FIELD_IMMUTABLE)]


# --- label selectors -------------------------------------------------------------------------

_SELECTOR_OPS = ("In", "NotIn", "Exists", "DoesNotExist")


def validate_label_selector(selector: dict, path: str, errs: Errs) -> None:
    """metav1 ValidateLabelSelector in strict mode (values must be valid label values)."""
    check_known(selector, LABEL_SELECTOR_FIELDS, path, errs)
    validate_labels(get_str_map(selector, "matchLabels", path, errs), child(path, "matchLabels"), errs)
    for _, rpath, req in dict_items(selector, "matchExpressions", path, errs):
        check_known(req, REQUIREMENT_FIELDS, rpath, errs)
        op = get_str(req, "operator", rpath, errs) or ""
        values = get_str_list(req, "values", rpath, errs) or []
        if op in ("In", "NotIn"):
            if not values:
                errs.append(
                    required(child(rpath, "values"), "must be specified when `operator` is 'In' or 'NotIn'")
                )
        elif op in ("Exists", "DoesNotExist"):
            if values:
                errs.append(
                    forbidden(
                        child(rpath, "values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    )
                )
        else:
            errs.append(invalid(child(rpath, "operator"), op, "not a valid selector operator"))
        k = get_str(req, "key", rpath, errs) or ""
        errs.extend(invalid(child(rpath, "key"), k, m) for m in is_qualified_name(k))
        for j, v in enumerate(values):
            errs.extend(invalid(index(child(rpath, "values"), j), v, m) for m in is_label_value(v))


def selector_is_empty(selector: dict) -> bool:
    return not selector.get("matchLabels") and not selector.get("matchExpressions")


def selector_matches(selector: dict | None, labels: dict[str, str] | None) -> bool:
    """LabelSelectorAsSelector(selector).Matches(labels); a missing selector matches nothing,
    an empty one everything."""
    if selector is None:
        return False
    labels = labels or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for req in selector.get("matchExpressions") or []:
        k, op, values = req.get("key"), req.get("operator"), req.get("values") or []
        present = k in labels
        if (
            (op == "In" and not (present and labels[k] in values))
            or (op == "NotIn" and present and labels[k] in values)
            or (op == "Exists" and not present)
            or (op == "DoesNotExist" and present)
        ):
            return False
    return True


def go_label_selector(selector: dict | None) -> GoValue:
    """`%#v` of a metav1.LabelSelector, as in the famous "spec.selector ... field is immutable"."""
    selector = selector or {}
    labels = selector.get("matchLabels")
    exprs = selector.get("matchExpressions")
    if exprs is None:
        exprs_text = "[]v1.LabelSelectorRequirement(nil)"
    else:
        parts = []
        for r in exprs if isinstance(exprs, list) else []:
            r = r if isinstance(r, dict) else {}
            parts.append(
                f"v1.LabelSelectorRequirement{{Key:{go_quote(str(r.get('key') or ''))}, "
                f"Operator:{go_quote(str(r.get('operator') or ''))}, "
                f"Values:{go_string_slice(r.get('values'))}}}"
            )
        exprs_text = "[]v1.LabelSelectorRequirement{" + ", ".join(parts) + "}"
    labels_text = go_string_map(labels if isinstance(labels, dict) else None)
    return GoValue(f"v1.LabelSelector{{MatchLabels:{labels_text}, MatchExpressions:{exprs_text}}}")


def template_labels(template: dict | None) -> dict[str, str] | None:
    meta = (template or {}).get("metadata")
    labels = meta.get("labels") if isinstance(meta, dict) else None
    return labels if isinstance(labels, dict) else None


def metadata_of(obj: dict, errs: Errs) -> dict:
    return get_dict(obj, "metadata", "", errs) or {}


# --- generateName ----------------------------------------------------------------------------

_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # no vowels: generated names never spell words


def generate_name(base: str, rng: random.Random | None = None) -> str:
    """The API server's SimpleNameGenerator: base (cut to 58) plus 5 random characters."""
    rng = rng or random.Random()
    return base[:58] + "".join(rng.choice(_NAME_ALPHABET) for _ in range(5))
