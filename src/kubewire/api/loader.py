"""Read manifests from files, directories and stdin the way `kubectl apply -f` does.

Documents are split on `---` lines with kubectl's own rule (a separator directly after another one
does not start a new document; one after a blank or comment-only chunk does), so "document N" means
the same chunk kubectl would see. YAML is parsed per document with line numbers kept relative to
the whole file. Like kubectl's YAML->JSON step, timestamps stay strings and non-string keys become
strings; duplicate keys are errors rather than silently overwritten.

A bad document does not hide the next ones: every document of every path is read and all the
problems are reported together (kubectl reports an error per object). Chunks are parsed one by one,
so a YAML error spoils only its own document; a bad `---` separator or a broken JSON stream ends
its file, as kubectl stops reading a stream there.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, TextIO

import yaml

from kubewire.api.errors import (
    FieldError,
    ManifestError,
    ManifestPathError,
    raise_if_any,
    required,
    type_invalid,
)

MANIFEST_EXTENSIONS = (".yaml", ".yml", ".json")
STDIN = "<stdin>"


@dataclass
class Document:
    source: str  # file path as given (joined with its directory), or "<stdin>"
    index: int  # 0-based position of the document in its file
    obj: dict
    item: int | None = None  # position inside a `kind: List`, when it came from one
    # Set only by read_paths/read_text: this document could not be read (obj is then {} or the
    # mapping as far as it was understood). load_paths/load_text never return such documents.
    error: ManifestError | None = None


def _failed(error: ManifestError, obj: dict | None = None) -> Document:
    return Document(error.source, error.index, obj if obj is not None else {}, item=error.item, error=error)


def _readable(docs: list[Document]) -> list[Document]:
    """docs, or every read error among them raised at once."""
    raise_if_any([d.error for d in docs if d.error is not None])
    return docs


_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[misc, valid-type]
    """SafeLoader minus the YAML 1.1 conversions kubectl's YAML->JSON step does not do."""


_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, rx)
        for tag, rx in resolvers
        if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _json_key(k: Any) -> str:
    if isinstance(k, bool):
        return "true" if k else "false"
    if k is None:
        return "null"
    return k if isinstance(k, str) else str(k)


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    """Like SafeConstructor's, but a key written twice is an error (keys from a `<<` merge may
    still be overridden, as YAML allows)."""
    own = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
    loader.flatten_mapping(node)
    merged = len(node.value) - own  # flatten_mapping puts merged pairs first
    out: dict = {}
    written: set[str] = set()
    for i, (key_node, value_node) in enumerate(node.value):
        k = _json_key(loader.construct_object(key_node, deep=True))
        if i >= merged:
            if k in written:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {json.dumps(k)} already set in map", key_node.start_mark
                )
            written.add(k)
        out[k] = loader.construct_object(value_node, deep=True)
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_paths(paths: list[str], stdin: TextIO | None = None) -> list[Document]:
    """Every document from every path, in order. A path is a file, a directory (its *.yaml,
    *.yml and *.json files, sorted, not recursive) or "-" for stdin. Documents that cannot be read
    are all reported in one ManifestError (ManifestErrors when there are several)."""
    return _readable(read_paths(paths, stdin))


def read_paths(paths: list[str], stdin: TextIO | None = None) -> list[Document]:
    """load_paths without the raise: unreadable documents come back in place with `error` set, so
    `apply` can report them together with the other documents' validation errors. A path that is
    missing or not text still raises ManifestPathError at once: it is the command line that is wrong."""
    docs: list[Document] = []
    for path in paths:
        if path == "-":
            docs.extend(read_text((stdin or sys.stdin).read(), STDIN))
        elif os.path.isdir(path):
            for name in sorted(os.listdir(path)):
                full = os.path.join(path, name)
                if name.endswith(MANIFEST_EXTENSIONS) and os.path.isfile(full):
                    docs.extend(read_text(_read(full), full))
        elif os.path.exists(path):
            docs.extend(read_text(_read(path), path))
        else:
            raise ManifestPathError(path)
    return docs


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise ManifestPathError(
            path, f'the path "{path}" is not UTF-8 text: {e.reason} at byte {e.start}'
        ) from e
    except OSError as e:
        raise ManifestPathError(path, f'the path "{path}" cannot be read: {e.strerror}') from e


def load_text(text: str, source: str) -> list[Document]:
    """The documents in one file's text; `source` names it in errors (all of them, raised together)."""
    return _readable(read_text(text, source))


def read_text(text: str, source: str) -> list[Document]:
    """load_text without the raise: unreadable documents come back with `error` set."""
    text = text.removeprefix("\ufeff")
    if text.lstrip().startswith("{"):
        json_docs = _read_json_stream(text, source)
        if json_docs is not None:
            return json_docs
    chunks, bad_separator = _split_documents(text, source)
    docs: list[Document] = []
    for index, (start, chunk) in enumerate(chunks):
        docs.extend(_read_chunk(chunk, start, source, index))
    if bad_separator is not None:
        docs.append(_failed(bad_separator))
    return docs


def _read_chunk(chunk: str, start: int, source: str, index: int) -> list[Document]:
    try:
        obj = _plain(yaml.load(chunk, Loader=_Loader), set())  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as e:
        return [_failed(ManifestError(source, index, None, None, [FieldError("", _yaml_message(e, start))]))]
    except RecursionError:
        message = "yaml: document nests too deeply or an anchor refers to itself"
        return [_failed(ManifestError(source, index, None, None, [FieldError("", message)]))]
    return [] if obj is None else _documents(obj, source, index)


def _plain(obj: Any, active: set[int]) -> Any:
    """A JSON-shaped copy: YAML aliases become independent copies (as in kubectl's YAML->JSON),
    so defaulting or a controller changing one never changes another; !!binary becomes base64."""
    if isinstance(obj, (dict, list, set, tuple)):
        if id(obj) in active:
            raise RecursionError("self-referencing YAML alias")
        active.add(id(obj))
        try:
            if isinstance(obj, dict):
                return {k: _plain(v, active) for k, v in obj.items()}
            return [_plain(v, active) for v in obj]
        finally:
            active.discard(id(obj))
    if isinstance(obj, bytes):
        return base64.b64encode(obj).decode()
    return obj


def _split_documents(text: str, source: str) -> tuple[list[tuple[int, str]], ManifestError | None]:
    """kubectl's YAMLReader: (first line number, text) per document, and the error that ended the
    file early (a `---` followed by more than a comment), if one did."""
    chunks: list[tuple[int, str]] = []
    buf: list[str] = []
    start = 0
    for lineno, line in enumerate(text.splitlines(keepends=True)):
        if line.startswith("---"):
            rest = line[3:].strip()
            if rest and not rest.startswith("#"):
                message = f"yaml: line {lineno + 1}: invalid document separator: {rest}"
                return chunks, ManifestError(source, len(chunks), None, None, [FieldError("", message)])
            if buf:
                chunks.append((start, "".join(buf)))
                buf = []
                continue
        if not buf:
            start = lineno
        buf.append(line)
    if buf:
        chunks.append((start, "".join(buf)))
    return chunks, None


def _yaml_message(e: yaml.YAMLError, start: int) -> str:
    """go-yaml's shape, "yaml: line N: <problem>", with N counted from the top of the file."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or getattr(e, "context", None) or str(e)
    if mark is None:
        return f"yaml: {problem}"
    return f"yaml: line {start + mark.line + 1}: {problem}"


def _read_json_stream(text: str, source: str) -> list[Document] | None:
    """A stream of JSON objects (kubectl reads JSON when the input starts with "{"); None when
    the text is not JSON after all, so it is read as YAML instead. A decoding error ends the
    stream: where the next object starts is unknown."""
    decoder = json.JSONDecoder()
    docs: list[Document] = []
    pos, index = 0, 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return docs
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            if index == 0:
                return None
            message = f"json: line {e.lineno} column {e.colno}: {e.msg}"
            docs.append(_failed(ManifestError(source, index, None, None, [FieldError("", message)])))
            return docs
        docs.extend(_documents(obj, source, index))
        index += 1


def _type_name(v: Any) -> str:
    if isinstance(v, list):
        return "a list"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    return type(v).__name__


def _head_errors(obj: dict) -> list[FieldError]:
    errs: list[FieldError] = []
    for name in ("apiVersion", "kind"):
        value = obj.get(name)
        if value in (None, ""):
            errs.append(required(name))
        elif not isinstance(value, str):
            errs.append(type_invalid(name, value, "string"))
    return errs


def _who(obj: dict) -> tuple[str | None, str | None, str | None]:
    kind = obj.get("kind") if isinstance(obj.get("kind"), str) else None
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    name = meta.get("name") if isinstance(meta.get("name"), str) else None
    ns = meta.get("namespace") if isinstance(meta.get("namespace"), str) else None
    return kind, name, ns


def _documents(obj: Any, source: str, index: int) -> list[Document]:
    """The document, or a List's items (each one failing or not on its own)."""
    if not isinstance(obj, dict):
        message = f"a manifest must be a mapping with apiVersion and kind, not {_type_name(obj)}"
        return [_failed(ManifestError(source, index, None, None, [FieldError("", message)]))]
    errs = _head_errors(obj)
    kind, name, ns = _who(obj)
    if errs:
        return [_failed(ManifestError(source, index, kind, name, errs, namespace=ns), obj)]
    if not (kind == "List" or (kind and kind.endswith("List") and "items" in obj)):
        return [Document(source, index, obj)]
    items = obj.get("items") or []
    if not isinstance(items, list):
        return [_failed(ManifestError(source, index, kind, name, [type_invalid("items", items, "array")]), obj)]
    return [_list_item(item, obj, kind, source, index, i) for i, item in enumerate(items)]


def _list_item(item: Any, parent: dict, list_kind: str, source: str, index: int, i: int) -> Document:
    """A `kind: List` item must name its own kind; a typed list (`PodList`) implies it."""
    if not isinstance(item, dict):
        message = f"a list item must be a mapping with apiVersion and kind, not {_type_name(item)}"
        return _failed(ManifestError(source, index, None, None, [FieldError("", message)], item=i))
    if list_kind != "List":
        item = dict(item)
        item.setdefault("apiVersion", parent.get("apiVersion"))
        item.setdefault("kind", list_kind.removesuffix("List"))
    errs = _head_errors(item)
    kind, name, ns = _who(item)
    if errs:
        return _failed(ManifestError(source, index, kind, name, errs, namespace=ns, item=i), item)
    return Document(source, index, item, item=i)
