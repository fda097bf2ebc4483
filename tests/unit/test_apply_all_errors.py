"""`apply` reports every invalid document at once, as kubectl reports an error per object, while
staying all-or-nothing: one bad document still means nothing is written. Each document's lines are
exactly what that document alone would print, so users' greps and older tests keep matching."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer

from kubewire.api.errors import ManifestError, ManifestErrors
from kubewire.api.loader import load_paths, load_text, read_paths
from kubewire.cli import main as cli_main
from kubewire.cli import objects, proxy_cmd
from kubewire.store.apply import apply_documents
from kubewire.store.db import Store

NAMESPACE = "apiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n"
CONFIGMAP = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: %s}\ndata: {a: b}\n"
BAD_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: -1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, image: nginx}]}
"""
ORPHAN = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: orphan, namespace: nowhere}\n"
SERVICE = "apiVersion: v1\nkind: Service\nmetadata: {name: %s}\nspec: {clusterIP: 10.96.0.5, ports: [{port: 80}]}\n"

DEPLOYMENT_LINE = (
    "document {i} (Deployment default/web): spec.replicas: Invalid value: -1: must be greater than or equal to 0"
)
ORPHAN_LINE = 'document {i} (ConfigMap orphan): metadata.namespace: Not found: namespaces "nowhere" not found'

THREE = BAD_DEPLOYMENT + "---\n" + CONFIGMAP % "fine" + "---\n" + ORPHAN


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(f"{tmp_path}/state.db")
    apply_documents(s, load_text(NAMESPACE % "default", "ns.yaml"))
    return s


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def stored(store: Store) -> list[tuple[str, str]]:
    return sorted((o["kind"], o["metadata"]["name"]) for o in store.list())


def apply_error(store: Store, text: str, source: str = "x.yaml") -> ManifestError:
    before = (stored(store), store.revision())
    with pytest.raises(ManifestError) as info:
        apply_documents(store, load_text(text, source))
    assert (stored(store), store.revision()) == before, "a rejected apply must write nothing"
    return info.value


def run_cli(monkeypatch: pytest.MonkeyPatch, store: Store, *argv: str) -> int:
    """`kubewire apply ...` through main(), against `store` instead of a running cluster."""
    cluster = SimpleNamespace(store=store, cfg=SimpleNamespace(service_subnet="10.96.0.0/12"))
    monkeypatch.setattr(objects, "handle", lambda: cluster)
    monkeypatch.setattr(sys, "argv", ["kubewire", *argv])
    with pytest.raises(SystemExit) as info:
        cli_main.main()
    return int(info.value.code or 0)


def test_cli_prints_every_invalid_document_in_order_and_stores_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: Store, tmp_path: Path
) -> None:
    path = write(tmp_path / "three.yaml", THREE)
    before = (stored(store), store.revision())
    assert run_cli(monkeypatch, store, "apply", "-f", path) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: {path}: " + DEPLOYMENT_LINE.format(i=0),
        f"error: {path}: " + ORPHAN_LINE.format(i=2),
    ]
    assert (stored(store), store.revision()) == before  # not even the valid ConfigMap


def test_one_invalid_document_prints_exactly_what_it_did_before(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: Store, tmp_path: Path
) -> None:
    path = write(tmp_path / "one.yaml", CONFIGMAP % "fine" + "---\n" + BAD_DEPLOYMENT)
    assert run_cli(monkeypatch, store, "apply", "-f", path) == 1
    assert capsys.readouterr().err == f"error: {path}: " + DEPLOYMENT_LINE.format(i=1) + "\n"
    err = apply_error(store, CONFIGMAP % "fine" + "---\n" + BAD_DEPLOYMENT)
    assert type(err) is ManifestError  # a lone error is raised as it always was, not wrapped
    assert (err.source, err.index, err.kind, err.name) == ("x.yaml", 1, "Deployment", "web")


def test_errors_across_two_files(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: Store, tmp_path: Path
) -> None:
    a = write(tmp_path / "a.yaml", CONFIGMAP % "fine-a" + "---\n" + BAD_DEPLOYMENT)
    b = write(tmp_path / "b.yaml", ORPHAN + "---\n" + CONFIGMAP % "fine-b")
    before = (stored(store), store.revision())
    assert run_cli(monkeypatch, store, "apply", "-f", a, "-f", b) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: {a}: " + DEPLOYMENT_LINE.format(i=1),
        f"error: {b}: " + ORPHAN_LINE.format(i=0),
    ]
    assert (stored(store), store.revision()) == before


def test_aggregate_is_a_manifest_error_whose_fields_are_the_first_documents(store: Store) -> None:
    err = apply_error(store, THREE)
    assert isinstance(err, ManifestErrors)
    assert (err.source, err.index, err.kind, err.name) == ("x.yaml", 0, "Deployment", "web")
    assert [(e.index, e.kind) for e in err.per_document] == [(0, "Deployment"), (2, "ConfigMap")]
    assert str(err) == "\n".join(str(e) for e in err.per_document)
    assert ManifestErrors([err, err.per_document[0]]).per_document == [*err.per_document, err.per_document[0]]


def test_a_document_with_several_field_errors_keeps_all_its_lines(store: Store) -> None:
    bad_port = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 99999}]}\n"
    err = apply_error(store, bad_port + "---\n" + ORPHAN)
    assert str(err).splitlines() == [
        "error: x.yaml: document 0 (Service default/s): spec.ports[0].port: Invalid value: 99999: "
        "must be between 1 and 65535, inclusive",
        "error: x.yaml: document 0 (Service default/s): spec.ports[0].targetPort: Invalid value: 99999: "
        "must be between 1 and 65535, inclusive",
        "error: x.yaml: " + ORPHAN_LINE.format(i=1),
    ]


def test_cluster_ip_conflict_between_documents_is_one_more_error(store: Store) -> None:
    conflict = SERVICE % "a" + "---\n" + SERVICE % "b"
    alone = str(apply_error(store, conflict))
    assert alone == (
        'error: x.yaml: document 1 (Service default/b): spec.clusterIPs: Invalid value: []string{"10.96.0.5"}: '
        "failed to allocate IP 10.96.0.5: provided IP is already allocated"
    )
    err = apply_error(store, BAD_DEPLOYMENT + "---\n" + conflict)
    assert str(err).splitlines() == ["error: x.yaml: " + DEPLOYMENT_LINE.format(i=0), alone.replace("document 1", "document 2")]


def test_invalid_services_take_no_cluster_ip_from_later_ones(store: Store) -> None:
    bad = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {clusterIP: 10.96.0.5, ports: [{port: 0}]}\n"
    err = apply_error(store, bad + "---\n" + SERVICE % "b")
    assert [e.index for e in err.per_document] == [0]


def test_namespace_created_in_the_same_apply_still_counts(store: Store) -> None:
    text = NAMESPACE % "team" + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: team}\n"
    err = apply_error(store, text + "---\n" + BAD_DEPLOYMENT)
    assert str(err) == "error: x.yaml: " + DEPLOYMENT_LINE.format(i=2)


def test_an_invalid_namespace_does_not_make_its_contents_errors_too(store: Store) -> None:
    bad_ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: team, labels: {'-bad': x}}\n"
    text = bad_ns + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: team}\n"
    err = apply_error(store, text)
    assert [e.index for e in err.per_document] == [0]


def test_unknown_kinds_and_bad_metadata_are_reported_not_crashes(store: Store) -> None:
    text = "apiVersion: v1\nkind: Gadget\nmetadata: {name: g}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: nope\n"
    lines = str(apply_error(store, text)).splitlines()
    assert lines[0].startswith('error: x.yaml: document 0 (Gadget g): no matches for kind "Gadget" in version "v1"')
    assert lines[1] == 'error: x.yaml: document 1 (ConfigMap): metadata: Invalid value: "nope": must be of type object'


def test_loader_keeps_reading_after_a_broken_document(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", CONFIGMAP % "ok" + "---\nkind: [unclosed\n---\nmetadata: {name: x}\n---\n- a list\n")
    b = write(tmp_path / "b.yaml", "apiVersion: v1\nkind: List\nitems:\n- 3\n- {apiVersion: v1, metadata: {name: y}}\n")
    with pytest.raises(ManifestErrors) as info:
        load_paths([a, b])
    assert [(e.source, e.index, e.item) for e in info.value.per_document] == [
        (a, 1, None), (a, 2, None), (a, 3, None), (b, 0, 0), (b, 0, 1),
    ]
    lines = str(info.value).splitlines()
    assert lines[0].startswith(f"error: {a}: document 1: yaml: line ")
    assert lines[1:] == [
        f"error: {a}: document 2: apiVersion: Required value",
        f"error: {a}: document 2: kind: Required value",
        f"error: {a}: document 3: a manifest must be a mapping with apiVersion and kind, not a list",
        f"error: {b}: document 0 item 0: a list item must be a mapping with apiVersion and kind, not a number",
        f"error: {b}: document 0 item 1: kind: Required value",
    ]


def test_a_bad_separator_ends_its_file_but_not_the_others(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", "metadata: {}\n---\n" + CONFIGMAP % "x" + "--- kind: Pod\n" + "metadata: {}\n")
    b = write(tmp_path / "b.yaml", "- b\n")
    with pytest.raises(ManifestErrors) as info:
        load_paths([a, b])
    # As kubectl's YAMLReader: the separator fails the document it ends (document 1, the ConfigMap);
    # the ones before it are still read, the rest of the file is not.
    assert str(info.value).splitlines() == [
        f"error: {a}: document 0: apiVersion: Required value",
        f"error: {a}: document 0: kind: Required value",
        f"error: {a}: document 1: yaml: line 7: invalid document separator: kind: Pod",
        f"error: {b}: document 0: a manifest must be a mapping with apiVersion and kind, not a list",
    ]


def test_read_paths_lets_apply_report_read_and_validation_errors_together(store: Store, tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", "kind: [unclosed\n---\n" + CONFIGMAP % "fine")
    b = write(tmp_path / "b.yaml", BAD_DEPLOYMENT)
    docs = read_paths([a, b])
    assert [d.error is not None for d in docs] == [True, False, False]
    before = (stored(store), store.revision())
    with pytest.raises(ManifestErrors) as info:
        apply_documents(store, docs)
    lines = str(info.value).splitlines()
    assert lines[0].startswith(f"error: {a}: document 0: yaml: line ")
    assert lines[1:] == [f"error: {b}: " + DEPLOYMENT_LINE.format(i=0)]
    assert (stored(store), store.revision()) == before


def test_proxy_render_prints_every_unreadable_document(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    a = write(tmp_path / "a.yaml", "metadata: {name: x}\n---\n- 1\n")
    with pytest.raises(typer.Exit) as info:
        proxy_cmd._load([a])
    assert info.value.exit_code == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: {a}: document 0: apiVersion: Required value",
        f"error: {a}: document 0: kind: Required value",
        f"error: {a}: document 1: a manifest must be a mapping with apiVersion and kind, not a list",
    ]
