"""Manifest loading: files, directories, stdin, multi-document YAML, Lists and the errors that
must name the file, the document and the line."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from kubewire.api.errors import FieldError, ManifestError, ManifestPathError
from kubewire.api.kinds import UnknownKindError, UnknownResourceError, lookup_kind, resolve_resource
from kubewire.api.loader import Document, load_paths, load_text

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  containers:
  - name: c
    image: busybox
"""


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def names(docs: list[Document]) -> list[str]:
    return [d.obj["metadata"]["name"] for d in docs]


def test_multi_document_keeps_positions_and_skips_empty_documents(tmp_path: Path) -> None:
    text = POD.format(name="a") + "---\n# only a comment\n---\n" + POD.format(name="b") + "---\n"
    docs = load_paths([write(tmp_path / "pods.yaml", text)])
    assert names(docs) == ["a", "b"]
    assert [d.index for d in docs] == [0, 2]
    assert all(d.source == str(tmp_path / "pods.yaml") for d in docs)


def test_back_to_back_separators_do_not_count_as_a_document() -> None:
    # kubectl's YAMLReader folds "---\n---" into one separator.
    text = "---\n" + POD.format(name="a") + "---\n---\n" + POD.format(name="b")
    assert [d.index for d in load_text(text, "x.yaml")] == [0, 1]


def test_error_in_document_two_names_the_index_and_the_file_line(tmp_path: Path) -> None:
    bad = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: c\n  labels: [unclosed\n"
    text = POD.format(name="a") + "---\n" + POD.format(name="b") + "---\n" + bad
    path = write(tmp_path / "x.yaml", text)
    with pytest.raises(ManifestError) as info:
        load_paths([path])
    err = info.value
    assert (err.source, err.index) == (path, 2)
    line = text.splitlines().index("  labels: [unclosed") + 1
    # libyaml notices at the end of the flow sequence, the pure-Python parser may say the line itself.
    assert re.match(rf"error: {re.escape(path)}: document 2: yaml: line ({line}|{line + 1}): ", str(err))


def test_yaml_syntax_error_message() -> None:
    with pytest.raises(ManifestError) as info:
        load_text("apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n   bad: indent\n", "bad.yaml")
    # libyaml (and go-yaml) say "in this context", the pure-Python parser "here".
    assert re.fullmatch(
        r"error: bad\.yaml: document 0: yaml: line 5: mapping values are not allowed (in this context|here)",
        str(info.value),
    )


def test_duplicate_keys_are_errors_not_overwrites() -> None:
    with pytest.raises(ManifestError) as info:
        load_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\nkind: Secret\n", "dup.yaml")
    assert info.value.errors == [FieldError("", 'yaml: line 4: key "kind" already set in map')]


def test_merge_keys_may_be_overridden() -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\nx: &base {a: '1', b: '2'}\ndata:\n  <<: *base\n  a: '3'\n"
    assert load_text(text, "m.yaml")[0].obj["data"] == {"a": "3", "b": "2"}


def test_invalid_separator_line() -> None:
    with pytest.raises(ManifestError, match="invalid document separator: apiVersion: v1"):
        load_text(POD.format(name="a") + "--- apiVersion: v1\n", "sep.yaml")


def test_missing_api_version_and_kind() -> None:
    with pytest.raises(ManifestError) as info:
        load_text("metadata:\n  name: a\n", "x.yaml")
    assert info.value.errors == [
        FieldError("apiVersion", "Required value"),
        FieldError("kind", "Required value"),
    ]
    assert str(info.value).splitlines() == [
        "error: x.yaml: document 0: apiVersion: Required value",
        "error: x.yaml: document 0: kind: Required value",
    ]


def test_document_that_is_not_a_mapping() -> None:
    with pytest.raises(ManifestError, match="must be a mapping with apiVersion and kind, not a list"):
        load_text("- a\n- b\n", "x.yaml")


def test_kind_list_expands_into_its_items() -> None:
    text = """\
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: ConfigMap, metadata: {name: one}}
- {apiVersion: v1, kind: ConfigMap, metadata: {name: two}}
"""
    docs = load_text(text, "list.yaml")
    assert names(docs) == ["one", "two"]
    assert [(d.index, d.item) for d in docs] == [(0, 0), (0, 1)]


def test_typed_list_items_inherit_kind_and_api_version() -> None:
    docs = load_text("apiVersion: v1\nkind: ConfigMapList\nitems:\n- metadata: {name: one}\n", "l.yaml")
    assert docs[0].obj["kind"] == "ConfigMap" and docs[0].obj["apiVersion"] == "v1"


def test_list_item_without_kind_names_the_item() -> None:
    with pytest.raises(ManifestError) as info:
        load_text("apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, metadata: {name: x}}\n", "l.yaml")
    assert str(info.value) == "error: l.yaml: document 0 item 0: kind: Required value"


def test_directory_loads_manifest_files_sorted_and_not_recursively(tmp_path: Path) -> None:
    write(tmp_path / "b.yml", POD.format(name="b"))
    write(tmp_path / "a.yaml", POD.format(name="a"))
    write(tmp_path / "c.json", '{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "c"}}')
    write(tmp_path / "notes.txt", "not a manifest")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "d.yaml", POD.format(name="d"))
    docs = load_paths([str(tmp_path)])
    assert names(docs) == ["a", "b", "c"]
    assert docs[0].source == str(tmp_path / "a.yaml")


def test_stdin_dash() -> None:
    docs = load_paths(["-"], stdin=io.StringIO(POD.format(name="from-stdin")))
    assert names(docs) == ["from-stdin"]
    assert docs[0].source == "<stdin>"


def test_json_stream() -> None:
    text = '{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}}\n{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b"}}'
    docs = load_text(text, "x.json")
    assert names(docs) == ["a", "b"] and [d.index for d in docs] == [0, 1]


def test_yaml_scalars_stay_as_kubectl_sees_them() -> None:
    obj = load_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata:\n  date: 2024-01-01\n  1: one\n", "x"
    )[0].obj
    assert obj["data"] == {"date": "2024-01-01", "1": "one"}


def test_missing_path() -> None:
    with pytest.raises(ManifestPathError) as info:
        load_paths(["does/not/exist.yaml"])
    assert str(info.value) == 'error: the path "does/not/exist.yaml" does not exist'


# --- kinds -----------------------------------------------------------------------------------


def test_lookup_kind() -> None:
    info = lookup_kind("apps/v1", "Deployment")
    assert (info.plural, info.short_names, info.namespaced) == ("deployments", ("deploy",), True)
    assert not lookup_kind("v1", "Namespace").namespaced


def test_unknown_kind_lists_supported_pairs() -> None:
    with pytest.raises(UnknownKindError) as info:
        lookup_kind("v1", "Frobnicator")
    text = str(info.value)
    assert text.startswith('no matches for kind "Frobnicator" in version "v1"; kubewire supports: ')
    assert "apps/v1 Deployment" in text and "networking.k8s.io/v1 NetworkPolicy" in text
    assert info.value.field == "kind"


def test_known_kind_with_wrong_api_version() -> None:
    with pytest.raises(UnknownKindError) as info:
        lookup_kind("extensions/v1beta1", "Ingress")
    assert str(info.value) == (
        'no matches for kind "Ingress" in version "extensions/v1beta1": Ingress is served as '
        "networking.k8s.io/v1 (use apiVersion: networking.k8s.io/v1)"
    )
    assert info.value.field == "apiVersion"


@pytest.mark.parametrize(
    ("word", "kind"),
    [
        ("pods", "Pod"),
        ("pod", "Pod"),
        ("po", "Pod"),
        ("PODS", "Pod"),
        ("deploy", "Deployment"),
        ("deployments.apps", "Deployment"),
        ("deployment.v1.apps", "Deployment"),
        ("svc", "Service"),
        ("endpointslices", "EndpointSlice"),
        ("endpointslices.discovery.k8s.io", "EndpointSlice"),
        ("netpol", "NetworkPolicy"),
        ("ing", "Ingress"),
        ("ingressclasses", "IngressClass"),
        ("ns", "Namespace"),
        ("cm", "ConfigMap"),
        ("NetworkPolicy", "NetworkPolicy"),
    ],
)
def test_resolve_resource(word: str, kind: str) -> None:
    assert resolve_resource(word).kind == kind


@pytest.mark.parametrize("word", ["foo", "deployments.extensions", "pods.apps"])
def test_resolve_unknown_resource(word: str) -> None:
    with pytest.raises(UnknownResourceError) as info:
        resolve_resource(word)
    assert str(info.value) == f'error: the server doesn\'t have a resource type "{word}"'
