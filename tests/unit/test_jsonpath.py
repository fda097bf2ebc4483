"""`kubewire get -o jsonpath=|custom-columns=`: kubectl's JSONPath dialect as client-go evaluates it
(the examples of kubernetes.io/docs/reference/kubectl/jsonpath and client-go's jsonpath_test.go),
kubectl's custom columns, and the `get` command around them (a fake store, no cluster)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from kubewire.cli import objects
from kubewire.cli.curl import from_pod
from kubewire.cli.custom_columns import custom_columns, parse_columns, parse_columns_file, relaxed
from kubewire.cli.goformat import go_json, go_text
from kubewire.cli.jsonpath import JSONPathError, JSONPathParseError, parse, render
from kubewire.cli.main import app

# The doc page's sample input.
DOC = json.loads("""{
  "kind": "List",
  "items":[
    {
      "kind":"None",
      "metadata":{"name":"127.0.0.1", "labels":{"kubernetes.io/hostname":"127.0.0.1"}},
      "status":{
        "capacity":{"cpu":"4"},
        "addresses":[{"type": "LegacyHostIP", "address":"127.0.0.1"}]
      }
    },
    {
      "kind":"None",
      "metadata":{"name":"127.0.0.2"},
      "status":{
        "capacity":{"cpu":"8"},
        "addresses":[
          {"type": "LegacyHostIP", "address":"127.0.0.2"},
          {"type": "another", "address":"127.0.0.3"}
        ]
      }
    }
  ],
  "users":[
    {"name": "myself", "user": {}},
    {"name": "e2e", "user": {"username": "admin", "password": "secret"}}
  ]
}""")


# The doc page's table. Where the page shows Go's old `map[cpu:4]` and `[a b]`, client-go has long
# printed JSON and space-separated values (its own tests say so), and that is what kubectl prints.
@pytest.mark.parametrize(("template", "expected"), [
    ("kind is {.kind}", "kind is List"),
    ("{.kind}", "List"),
    ("{['kind']}", "List"),
    ("{..name}", "127.0.0.1 127.0.0.2 myself e2e"),
    ("{.items[*].metadata.name}", "127.0.0.1 127.0.0.2"),
    ("{.users[0].name}", "myself"),
    ("{.items[*]['metadata.name', 'status.capacity']}", '127.0.0.1 127.0.0.2 {"cpu":"4"} {"cpu":"8"}'),
    ('{.users[?(@.name=="e2e")].user.password}', "secret"),
    ("{range .items[*]}[{.metadata.name}, {.status.capacity}] {end}",
     '[127.0.0.1, {"cpu":"4"}] [127.0.0.2, {"cpu":"8"}] '),
    ("{range .items[*]}{.metadata.name}{'\\t'}{end}", "127.0.0.1\t127.0.0.2\t"),
    ("{.items[0].metadata.labels.kubernetes\\.io/hostname}", "127.0.0.1"),
])
def test_the_doc_pages_examples(template: str, expected: str) -> None:
    assert render(template, DOC) == expected


def test_the_current_object_is_the_input() -> None:
    assert json.loads(render("{@}", DOC)) == DOC
    assert render("{$}", DOC) == render("{@}", DOC)


def test_the_doc_pages_kubectl_commands() -> None:
    pods = {"kind": "List", "items": [
        {"metadata": {"name": "a"}, "status": {"startTime": "2024-01-01T00:00:00Z"}},
        {"metadata": {"name": "b"}, "status": {"startTime": "2024-01-02T00:00:00Z"}}]}
    assert render('{range .items[*]}{.metadata.name}{"\\t"}{.status.startTime}{"\\n"}{end}', pods) == \
        "a\t2024-01-01T00:00:00Z\nb\t2024-01-02T00:00:00Z\n"
    assert render("{.items[0]}", pods) == '{"metadata":{"name":"a"},"status":{"startTime":"2024-01-01T00:00:00Z"}}'
    assert render('{.items[?(@.metadata.name=="b")].status.startTime}', pods) == "2024-01-02T00:00:00Z"


TYPES = {
    "bools": [True, False, True, False],
    "integers": [1, 2, 3, 4],
    "floats": [1.0, 2.2, 3.3, 4.0],
    "strings": ["one", "two", "three", "four"],
    "interfaces": [True, "one", 1, 1.1],
    "maps": [{"name": "one", "value": 1}, {"name": "two", "value": 2.02},
             {"name": "three", "value": 3.03}, {"name": "four", "value": 4.04}],
}


@pytest.mark.parametrize(("template", "expected"), [
    ("{ .bools }", "[true,false,true,false]"),
    ("{ .bools[-1] }", "false"),
    ("{ .bools[:4:2] }", "true true"),
    ("{ .integers[-2] }", "3"),
    ("{ .integers[0:2] }", "1 2"),
    ("{ .floats }", "[1,2.2,3.3,4]"),
    ("{ .floats[0] }", "1"),
    ("{ .floats[:4:2] }", "1 3.3"),
    ("{ .strings }", '["one","two","three","four"]'),
    ("{ .strings[:2] }", "one two"),
    ("{ .interfaces }", '[true,"one",1,1.1]'),
    ("{ .interfaces[:4:2] }", "true 1"),
    ("{ .maps[-2] }", '{"name":"three","value":3.03}'),
    ("{ .maps[1::2] }", '{"name":"two","value":2.02} {"name":"four","value":4.04}'),
])
def test_client_go_typed_values(template: str, expected: str) -> None:
    assert render(template, TYPES, allow_missing_keys=False) == expected


CONTAINERS = {"spec": {"containers": [{"name": f"fake{i}"} for i in range(6)]}}


@pytest.mark.parametrize(("index", "expected"), [
    ("0", "fake0"), ("-1", "fake5"), ("-6", "fake0"), ("0:0", ""), ("0:-1", "fake0 fake1 fake2 fake3 fake4"),
    ("-2:", "fake4 fake5"), ("7:7", ""), ("-7:-7", ""), ("1:4:2", "fake1 fake3"), ("0:6:5", "fake0 fake5"),
    ("0:", "fake0 fake1 fake2 fake3 fake4 fake5"), ("0:6:", "fake0 fake1 fake2 fake3 fake4 fake5"),
    ("*", "fake0 fake1 fake2 fake3 fake4 fake5"), ("1,3", "fake1 fake3"),
])
def test_indexes_slices_and_steps(index: str, expected: str) -> None:
    assert render(f"{{.spec.containers[{index}].name}}", CONTAINERS, allow_missing_keys=False) == expected


@pytest.mark.parametrize(("index", "error"), [
    ("-7", "array index out of bounds: index -1, length 6"),
    ("6", "array index out of bounds: index 6, length 6"),
    ("-1:0", "starting index 5 is greater than ending index 0"),
    ("3:1", "starting index 3 is greater than ending index 1"),
    ("0:6:0", "step must be > 0"),
    ("0:6:-1", "step must be > 0"),
])
def test_an_index_out_of_range_is_an_error_even_when_keys_may_be_missing(index: str, error: str) -> None:
    with pytest.raises(JSONPathError, match=f"^{error}$"):
        render(f"{{.spec.containers[{index}].name}}", CONTAINERS, allow_missing_keys=True)


def test_the_first_item_of_an_empty_list_is_an_error_as_in_kubectl() -> None:
    with pytest.raises(JSONPathError, match="array index out of bounds: index 0, length 0"):
        render("{.items[0].metadata.name}", {"kind": "List", "items": []})


def test_missing_keys_print_nothing_unless_refused() -> None:
    assert render("{.hello}", DOC) == ""
    assert render("before-{.hello}after", DOC) == "before-after"
    assert render("{.items[*].spec.clusterIP}", DOC) == ""
    with pytest.raises(JSONPathError, match="^hello is not found$"):
        render("{.hello}", DOC, allow_missing_keys=False)
    # no input, no output: a wildcard over nothing is not a missing key
    assert render("{.items[*].metadata.name}", {"items": []}, allow_missing_keys=False) == ""


def test_filters() -> None:
    nodes = {"status": {"addresses": [{"type": "InternalIP", "address": "172.18.1.2"},
                                      {"type": "Hostname", "address": "worker-1"}]}}
    assert render('{.status.addresses[?(@.type=="InternalIP")].address}', nodes) == "172.18.1.2"
    assert render("{.status.addresses[?(@.type!='InternalIP')].address}", nodes) == "worker-1"
    assert render("{[?(@<5)]}", [2, 6, 3, 7]) == "2 3"
    assert render("{[?(@>5)]}", [2, 6, 3, 7]) == "6 7"
    assert render("{[?(@>=6)]}", [2, 6, 3, 7]) == "6 7"
    assert render("{[?(@<=3)]}", [2, 6, 3, 7]) == "2 3"
    points = [{"id": "i1", "x": 4}, {"id": "i2", "x": -2, "z": 1}, {"id": "i5", "x": 0, "z": None}]
    assert render("{[?(@.z)].id}", points) == "i2 i5"  # existence: the key is there (even null)
    assert render("{[0]['id']}", points) == "i1"
    ports = {"ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]}
    assert render("{.ports[?(@.port==443)].name}", ports) == "https"
    assert render("{.ports[?(@.port > 100)].name}", ports) == "https"


def test_a_filter_tolerates_items_without_the_key_only_when_missing_keys_are_allowed() -> None:
    pods = {"items": [{"metadata": {"name": "pod1", "annotations": {"color": "blue"}}},
                      {"metadata": {"name": "pod2"}},
                      {"metadata": {"name": "pod4", "annotations": {"color": "blue"}}}]}
    template = '{.items[?(@.metadata.annotations.color=="blue")].metadata.name}'
    assert render(template, pods) == "pod1 pod4"
    with pytest.raises(JSONPathError, match="annotations is not found"):
        render(template, pods, allow_missing_keys=False)
    # a filter without `@`, and an item the filter skips
    pods["items"].append({"resourceVersion": ""})
    assert render('{range .items[?(.metadata.name=="pod2")]}{.metadata.name}{" is here\\n"}{end}', pods) == \
        "pod2 is here\n"


def test_filter_comparisons_need_alike_types() -> None:
    with pytest.raises(JSONPathError, match="^incompatible types for comparison$"):
        render('{.ports[?(@.port=="80")]}', {"ports": [{"port": 80}]})
    with pytest.raises(JSONPathError, match="^invalid type for comparison$"):
        render("{.a[?(@.b<true)]}", {"a": [{"b": False}]})
    with pytest.raises(JSONPathError, match="^unrecognized filter operator <>$"):
        render("{.a[?(@.b<>1)]}", {"a": [{"b": 1}]})
    assert render("{.a[?(@.b==true)].n}", {"a": [{"b": True, "n": "x"}, {"b": False, "n": "y"}]}) == "x"


def test_ranges_nest_and_an_empty_range_prints_nothing() -> None:
    data = {"items": [
        {"metadata": {"name": "pod1"}, "spec": {"containers": [
            {"name": "foo", "another": [{"name": "value1"}, {"name": "value2"}]},
            {"name": "bar", "another": [{"name": "value1"}, {"name": "value2"}]}]}},
        {"metadata": {"name": "pod2"}, "spec": {"containers": [
            {"name": "baz", "another": [{"name": "value1"}, {"name": "value2"}]}]}}]}
    assert render('{range .items[*]}{.metadata.name}{":"}{range @.spec.containers[*]}{.name}{","}{end}{"+"}{end}',
                  data, allow_missing_keys=False) == "pod1:foo,bar,+pod2:baz,+"
    assert render('{range .items[*]}{.metadata.name}{"~"}{range @.spec.containers[*]}{.name}{":"}'
                  '{range @.another[*]}{.name}{","}{end}{"+"}{end}{"#"}{end}', data, allow_missing_keys=False) == \
        "pod1~foo:value1,value2,+bar:value1,value2,+#pod2~baz:value1,value2,+#"
    assert render('{range .items[*]}{.metadata.name}{"\\t"}{range @.spec.containers[*]}{.name}{" "}{end}{"\\t"}'
                  '{range @.spec.containers[*]}{.name}{" "}{end}{"\\n"}{end}', data, allow_missing_keys=False) == \
        "pod1\tfoo bar \tfoo bar \npod2\tbaz \tbaz \n"
    empty = {"items": []}
    assert render("{range .items[*]}{.metadata.name}{end}", empty) == ""
    assert render('{range .items[*]}{.metadata.name}{":"}{range @.spec.containers[*]}{.name}{","}{end}{"+"}{end}'
                  "after", empty) == "after"


def test_recursive_descent_wildcards_and_unions() -> None:
    assert render("{..}", [1, 2, 3]) == "[1,2,3]"
    store = {"book": [{"price": 8.95}, {"price": 12.99}], "bicycle": [{"color": "red", "price": 19.95}]}
    assert render("{..price}", store) == "8.95 12.99 19.95"
    assert render("{...price}", store) == "8.95 12.99 19.95"
    assert render("{..book[1]}", store) == '{"price":12.99}'
    assert render('{range .bicycle[*]}{ "{" }{ @.* }{ "} " }{end}', store) == "{red 19.95} "
    assert render("{[1,3,4]}", [0, 1, 2, 3, 4]) == "1 3 4"
    assert render("{[0:2]}", ["Monday", "Tuesday"]) == "Monday Tuesday"
    labels = {"labels": {"web/html": 15, "k8s-app": 20}}
    assert render("{$.labels.web/html}", labels) == "15"
    assert render("{.labels.k8s-app}", labels) == "20"


def test_keys_with_dots() -> None:
    svc = {"metadata": {"labels": {"app.kubernetes.io/name": "web", "app": {"kubernetes": {"io/name": "nested"}}}}}
    assert render("{.metadata.labels.app\\.kubernetes\\.io/name}", svc) == "web"
    assert render("{.metadata.labels['app\\.kubernetes\\.io/name']}", svc) == "web"
    # as upstream: inside ['...'] a dot still separates keys
    assert render("{.metadata.labels['app.kubernetes.io/name']}", svc) == "nested"


def test_string_literals() -> None:
    assert render('{"{"}', None) == "{"
    assert render("{'a b'}{\"\\n\"}{'\\t'}{\"\\u00e9\\x41\\101\"}", None) == "a b\n\téAA"
    assert render("hello jsonpath", None) == "hello jsonpath"
    assert render("", DOC) == ""


def test_several_values_and_scalars_print_as_go_prints_them() -> None:
    data = {"a": None, "b": 1.5, "c": 10, "d": True, "e": "x", "f": {"z": 1, "a": [1, "two"]}, "g": 1e6}
    assert render("{.a} {.b} {.c} {.d} {.e}", data) == "<nil> 1.5 10 true x"
    assert render("{.f}", data) == '{"a":[1,"two"],"z":1}'
    assert render("{.g}", data) == "1e+06"
    assert render("{.b}{.c}", data) == "1.510"  # groups are not separated: only values within one


def test_jsonpath_as_json() -> None:
    assert render("{.items[*].metadata.name}", DOC, as_json=True) == '[\n    "127.0.0.1",\n    "127.0.0.2"\n]\n'
    assert render("{.items[0].status.capacity}", DOC, as_json=True) == '[\n    {\n        "cpu": "4"\n    }\n]\n'
    assert render("{.nothing}", DOC, as_json=True) == "[]\n"


@pytest.mark.parametrize(("template", "error"), [
    ("{.a", "unclosed action"),
    ("{.a[}", "unterminated array"),
    ("{.a[?(@.x)}", "unclosed array expect ]"),
    ("{.a[?(@.x==1}", "unterminated filter"),
    ("{'abc}", "unterminated quoted string"),
    ("{.a[x]}", "invalid array index x"),
    ('{.a["x"]}', 'invalid array index "x"'),
    ("{.a[1:2:x]}", "invalid array index 1:2:x"),
    ("{.a[-]}", "array index - is not a number"),
    ("{....a}", "invalid multiple recursive descent"),
    ("{!}", "unrecognized character in action: U+0021 '!'"),
    ('{"\\q"}', 'unquote string "\\q" error invalid syntax'),
    ("{1.2.3}", "cannot parse number 1.2.3"),
])
def test_templates_client_go_refuses(template: str, error: str) -> None:
    with pytest.raises(JSONPathParseError) as e:
        parse(template)
    assert str(e.value) == error


@pytest.mark.parametrize(("template", "error"), [
    ("{hello}", "unrecognized identifier hello"),
    ("{metadata.name}", "unrecognized identifier metadata"),
    ("{.kind[0]}", "string is not array or slice"),
    ("{.items[0].metadata[0]}", "map[string]interface {} is not array or slice"),
    ("{range .items[*]}{@}{end}{end}", "not in range, nothing to end"),
    ("{.items[?(@.kind)].metadata[?(@.x)]}", "map[name:127.0.0.1 labels:map[kubernetes.io/hostname:127.0.0.1]] "
                                             "is not array or slice and cannot be filtered"),
])
def test_execution_errors(template: str, error: str) -> None:
    with pytest.raises(JSONPathError) as e:
        render(template, DOC)
    expected = error.replace("map[name:127.0.0.1 labels:map[kubernetes.io/hostname:127.0.0.1]]",
                             "map[labels:map[kubernetes.io/hostname:127.0.0.1] name:127.0.0.1]")
    assert str(e.value) == expected


def test_go_formatting() -> None:
    assert [go_text(f) for f in (1.0, 2.5, 1e6, 123456.0, 1e-5, 0.0001, -0.0)] == \
        ["1", "2.5", "1e+06", "123456", "1e-05", "0.0001", "-0"]
    assert [go_json(f) for f in (1.0, 1e6, 1e21, 1e-7, 1e-5)] == ["1", "1000000", "1e+21", "1e-7", "0.00001"]
    assert go_text({"b": [1, None], "a": {"x": "y"}}) == "map[a:map[x:y] b:[1 <nil>]]"
    assert go_json({"b": "<&>", "a": "é\u2028"}) == '{"a":"é\\u2028","b":"\\u003c\\u0026\\u003e"}'
    assert go_json({"a": [], "b": {}}, indent=True) == '{\n    "a": [],\n    "b": {}\n}'


# --- custom columns ----------------------------------------------------------------------------

SERVICES = [
    {"kind": "Service", "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web", "tier": "fe"}},
     "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}, {"port": 443}]}},
    {"kind": "Service", "metadata": {"name": "db", "namespace": "shop"},
     "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}},
    {"kind": "Service", "metadata": {"name": "ext", "namespace": "shop"}, "spec": {"type": "ExternalName"}},
]


def test_relaxed_paths() -> None:
    assert [relaxed(p) for p in ("metadata.name", ".metadata.name", "{metadata.name}", "{.metadata.name}", "")] == \
        ["{.metadata.name}"] * 4 + [""]
    with pytest.raises(JSONPathParseError, match="unexpected path string"):
        relaxed("{.a}{.b}")


def test_custom_columns_as_kubectl_prints_them() -> None:
    cols = parse_columns("NAME:.metadata.name,IP:.spec.clusterIP,PORTS:.spec.ports[*].port,LABELS:metadata.labels")
    assert custom_columns(cols, SERVICES) == (
        "NAME   IP           PORTS    LABELS\n"
        "web    10.96.0.10   80,443   map[app:web tier:fe]\n"
        "db     None         5432     <none>\n"
        "ext    <none>       <none>   <none>\n")
    assert custom_columns(cols, SERVICES, no_headers=True).splitlines()[0] == \
        "web   10.96.0.10   80,443   map[app:web tier:fe]"  # widths from the rows alone
    assert custom_columns(cols, []) == "NAME   IP    PORTS   LABELS\n"  # header only; columns at least 6 wide


def test_custom_columns_spec_errors() -> None:
    with pytest.raises(JSONPathParseError, match="custom-columns format specified but no custom columns given"):
        parse_columns("")
    with pytest.raises(JSONPathParseError, match="unexpected custom-columns spec: NAME, expected <header>:<json-path-expr>"):
        parse_columns("NAME")
    with pytest.raises(JSONPathError, match="array index out of bounds"):
        custom_columns(parse_columns("P:.spec.ports[3].port"), SERVICES[:1])


def test_custom_columns_file() -> None:
    cols = parse_columns_file("NAME          IP\n.metadata.name  {.spec.clusterIP}\n")
    assert custom_columns(cols, SERVICES[:2]) == "NAME   IP\nweb    10.96.0.10\ndb     None\n"
    with pytest.raises(JSONPathParseError, match="missing header line"):
        parse_columns_file("")
    with pytest.raises(JSONPathParseError, match="missing spec line"):
        parse_columns_file("NAME IP\n")
    with pytest.raises(JSONPathParseError, match=r"number of headers \(2\) and field specifications \(1\) don't match"):
        parse_columns_file("NAME IP\n.metadata.name\n")


# --- kubewire get ------------------------------------------------------------------------------

def test_printer_applies_the_template_to_the_object_or_the_list() -> None:
    jp = objects.printer("jsonpath={.metadata.name}")
    assert jp is not None and jp(SERVICES[0]) == "web"
    jp = objects.printer("=jsonpath={.items[*].metadata.name}")  # -o=jsonpath=...
    assert jp is not None and jp(objects.as_list(SERVICES)) == "web db ext"
    cc = objects.printer("custom-columns=NAME:.metadata.name", no_headers=True)
    assert cc is not None and cc(objects.as_list(SERVICES)) == "web\ndb\next\n"
    assert cc(SERVICES[1]) == "db\n"
    assert objects.printer(None) is None and objects.printer("wide") is None


def test_printer_reads_files(tmp_path) -> None:
    (tmp_path / "t").write_text("{.spec.clusterIP}")
    (tmp_path / "c").write_text("NAME\n.metadata.name\n")
    jp = objects.printer(f"jsonpath-file={tmp_path / 't'}")
    assert jp is not None and jp(SERVICES[0]) == "10.96.0.10"
    cc = objects.printer(f"custom-columns-file={tmp_path / 'c'}", no_headers=True)
    assert cc is not None and cc(SERVICES[0]) == "NAME\nweb\n"  # kubectl ignores --no-headers there


class FakeStore:
    def __init__(self, objs: list[dict]) -> None:
        self.objs = objs

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        return next((o for o in self.objs if o["kind"] == kind and o["metadata"]["name"] == name
                     and o["metadata"].get("namespace", "") == namespace), None)

    def list(self, kind: str | None = None, namespace: str | None = None) -> list[dict]:
        return [o for o in self.objs if o["kind"] == kind and namespace in (None, o["metadata"].get("namespace"))]


WORLD = [
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
     "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.20", "ports": [{"port": 80, "protocol": "TCP"}]}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": "default"},
     "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.21", "ports": [{"port": 8080, "protocol": "TCP"}]}},
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
     "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}}},
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api", "namespace": "default"},
     "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "c", "image": "api"}]}}}},
]


@pytest.fixture
def kw(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(objects, "handle", lambda: SimpleNamespace(store=FakeStore(WORLD)))
    runner = CliRunner()
    return lambda *argv: runner.invoke(app, list(argv))


def test_get_jsonpath_and_custom_columns(kw) -> None:
    r = kw("get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}")
    assert (r.exit_code, r.stdout) == (0, "10.96.0.20")
    r = kw("get", "svc", "-o=jsonpath={range .items[*]}{.metadata.name}{'\\t'}{.spec.clusterIP}{'\\n'}{end}")
    assert r.stdout == "web\t10.96.0.20\napi\t10.96.0.21\n"
    r = kw("get", "svc", "-o", "custom-columns=NAME:.metadata.name,IP:.spec.clusterIP,TYPE:.spec.type")
    assert r.stdout == "NAME   IP           TYPE\nweb    10.96.0.20   ClusterIP\napi    10.96.0.21   ClusterIP\n"
    r = kw("get", "svc", "--no-headers", "-o", "custom-columns=NAME:.metadata.name")
    assert r.stdout == "web\napi\n"
    r = kw("get", "svc", "-o", "jsonpath-as-json={.items[*].spec.ports[0].port}")
    assert json.loads(r.stdout) == [80, 8080]


def test_get_several_types_with_one_name_and_type_name_pairs(kw) -> None:
    r = kw("get", "svc,deploy", "web", "-o", "name")
    assert (r.exit_code, r.stdout) == (0, "service/web\ndeployment.apps/web\n")
    r = kw("get", "svc/web", "deploy/api", "-o", "jsonpath={.items[*].kind}")
    assert r.stdout == "Service Deployment"
    r = kw("get", "svc,deploy", "web", "api", "-o", "name")
    assert r.stdout == "service/web\nservice/api\ndeployment.apps/web\ndeployment.apps/api\n"
    r = kw("get", "svc", "svc/web")
    assert r.exit_code == 1 and "no need to specify a resource type as a separate argument" in r.stderr
    r = kw("get", "all", "web")
    assert r.exit_code == 1 and "you must specify only one resource" in r.stderr


def test_get_tables_for_several_types_and_without_headers(kw) -> None:
    r = kw("get", "svc,deploy", "web")
    lines = r.stdout.splitlines()
    assert lines[0].split()[:2] == ["NAME", "TYPE"] and lines[1].startswith("service/web ")
    assert lines[2] == "" and lines[3].split()[:2] == ["NAME", "READY"] and lines[4].startswith("deployment.apps/web ")
    r = kw("get", "svc", "--no-headers")
    assert [x.split()[0] for x in r.stdout.splitlines()] == ["web", "api"]


def test_get_missing_keys_and_missing_objects(kw) -> None:
    r = kw("get", "svc", "web", "-o", "jsonpath={.spec.nope}")
    assert (r.exit_code, r.stdout) == (0, "")
    r = kw("get", "svc", "web", "-o", "jsonpath={.spec.nope}", "--allow-missing-template-keys=false")
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr.startswith('error: error executing jsonpath "{.spec.nope}": Error executing template: '
                               "nope is not found. Printing more information for debugging the template:\n"
                               "\ttemplate was:\n\t\t{.spec.nope}\n")
    r = kw("get", "svc", "nope", "-o", "jsonpath={.spec.clusterIP}")
    assert (r.exit_code, r.stdout) == (1, "")
    assert 'Error from server (NotFound): services "nope" not found' in r.stderr
    r = kw("get", "svc", "web", "nope", "-o", "jsonpath={.items[*].metadata.name}")
    assert (r.exit_code, r.stdout) == (1, "web")


def test_get_refuses_bad_formats_before_fetching(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_cluster() -> None:
        raise AssertionError("fetched")

    monkeypatch.setattr(objects, "handle", no_cluster)
    runner = CliRunner()
    for argv, msg in [
        (["-o", "jsonpath="], "template format specified but no template given"),
        (["-o", "jsonpath"], "template format specified but no template given"),
        (["-o", "jsonpath={.a[}"], "error parsing jsonpath {.a[}, unterminated array"),
        (["-o", "custom-columns="], "custom-columns format specified but no custom columns given"),
        (["-o", "yml"], 'unable to match a printer suitable for the output format "yml", allowed formats are: '),
        (["--allow-missing-template-keys=maybe"], 'invalid argument "maybe" for "--allow-missing-template-keys"'),
    ]:
        r = runner.invoke(app, ["get", "svc", *argv])
        assert r.exit_code == 1 and msg in r.stderr, (argv, r.stderr)


def test_from_pod_takes_the_namespace_from_n_as_kubectl_exec_does() -> None:
    assert from_pod("client", None) == ("default", "client")
    assert from_pod("client", "shop") == ("shop", "client")
    assert from_pod("prod/client", "shop") == ("prod", "client")
    assert from_pod("prod/deploy/api", None) == ("prod", "deploy/api")
