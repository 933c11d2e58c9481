"""The hand-written stubs (kubeleash/__init__.pyi) against the module: every public name and
member in one is in the other, with the same parameters."""

from __future__ import annotations

import ast
import builtins
import inspect
from pathlib import Path

import pytest

import kubeleash

STUB = Path(kubeleash.__file__).with_name("__init__.pyi")
TREE = ast.parse(STUB.read_text())


def base_names(c: ast.ClassDef) -> list[str]:
    return [b.id if isinstance(b, ast.Name) else ast.unparse(b) for b in c.bases]


STUB_CLASSES = {n.name: n for n in TREE.body if isinstance(n, ast.ClassDef)}
# TypedDicts describe the dicts the module returns; they exist for type checkers only.
RUNTIME_CLASSES = {k: v for k, v in STUB_CLASSES.items() if "TypedDict" not in base_names(v)}
STUB_FUNCTIONS = {n.name: n for n in TREE.body if isinstance(n, ast.FunctionDef)}
STUB_VARIABLES = {n.target.id for n in TREE.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
STUB_ALL = next(ast.literal_eval(n.value) for n in TREE.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "__all__")


def test_all_matches():
    assert sorted(STUB_ALL) == sorted(kubeleash.__all__)
    public = {n for n in dir(kubeleash) if not n.startswith("_")} - {"kubernetes"}
    assert public == {n for n in kubeleash.__all__ if not n.startswith("_")}
    stubbed = set(RUNTIME_CLASSES) | set(STUB_FUNCTIONS) | STUB_VARIABLES
    assert stubbed == set(kubeleash.__all__)


@pytest.mark.parametrize("name", sorted(RUNTIME_CLASSES))
def test_class_bases(name):
    cls = getattr(kubeleash, name)
    for b in base_names(RUNTIME_CLASSES[name]):
        assert issubclass(cls, getattr(builtins, b, None) or getattr(kubeleash, b)), b
    assert cls.__module__ in ("kubeleash", "kubeleash._native")


def params(fn: ast.FunctionDef) -> list[tuple[str, str, str | None]]:
    """(name, kind, default) for each parameter but self/cls, as inspect names kinds."""
    a = fn.args
    out = []
    positional = a.posonlyargs + a.args
    defaults = [None] * (len(positional) - len(a.defaults)) + [ast.unparse(d) for d in a.defaults]
    for p, d in zip(positional, defaults):
        kind = "POSITIONAL_ONLY" if p in a.posonlyargs else "POSITIONAL_OR_KEYWORD"
        out.append((p.arg, kind, d))
    if a.vararg:
        out.append((a.vararg.arg, "VAR_POSITIONAL", None))
    for p, d in zip(a.kwonlyargs, a.kw_defaults):
        out.append((p.arg, "KEYWORD_ONLY", ast.unparse(d) if d is not None else None))
    if a.kwarg:
        out.append((a.kwarg.arg, "VAR_KEYWORD", None))
    return [p for p in out if p[0] not in ("self", "cls")]


def runtime_params(obj) -> list[tuple[str, str, str | None]]:
    sig = inspect.signature(obj)
    out = []
    for p in sig.parameters.values():
        d = None if p.default is inspect.Parameter.empty else repr(p.default)
        out.append((p.name, p.kind.name, d))
    return [p for p in out if p[0] not in ("self", "cls", "$self", "$cls")]


def same_default(stub: str | None, runtime: str | None) -> bool:
    if stub is None or runtime is None:
        return stub == runtime
    # pyo3 writes a default it cannot render as `...`; the stub's literal then stands.
    if runtime == "Ellipsis":
        return True
    try:
        return ast.literal_eval(stub) == ast.literal_eval(runtime) or (stub, runtime) in {("()", "[]")}
    except ValueError:
        return stub == runtime


def check_signature(stub_fn: ast.FunctionDef, obj, where: str):
    want = params(stub_fn)
    got = runtime_params(obj)
    assert [(n, k) for n, k, _ in want] == [(n, k) for n, k, _ in got], where
    for (n, _, d1), (_, _, d2) in zip(want, got):
        assert same_default(d1, d2), f"{where}({n}): stub default {d1}, runtime {d2}"


def members(c: ast.ClassDef) -> dict[str, ast.FunctionDef | ast.AnnAssign]:
    out = {}
    for n in c.body:
        if isinstance(n, ast.FunctionDef):
            out[n.name] = n
        elif isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name):
            out[n.target.id] = n
    return out


@pytest.mark.parametrize("name", sorted(RUNTIME_CLASSES))
def test_class_members(name):
    cls = getattr(kubeleash, name)
    stub_members = members(RUNTIME_CLASSES[name])
    if issubclass(cls, BaseException):
        # Attributes set on each instance by the module: check them on a real one.
        assert set(stub_members) <= {"errors", "code", "safe"}
        return
    runtime = {n for n in vars(cls) if not n.startswith("_")}
    assert runtime == {n for n in stub_members if not n.startswith("_")}, name
    for n, node in stub_members.items():
        attr = inspect.getattr_static(cls, n)
        if isinstance(node, ast.FunctionDef):
            decos = [ast.unparse(d) for d in node.decorator_list]
            if "property" in decos:
                assert type(attr).__name__ == "getset_descriptor", f"{name}.{n} is not a property"
                continue
            if n.startswith("__"):
                continue
            kind = type(attr).__name__.replace("classmethod_descriptor", "classmethod")
            kind = kind if kind in ("classmethod", "staticmethod") else "method"
            want = next((d for d in decos if d in ("classmethod", "staticmethod")), "method")
            assert kind == want, f"{name}.{n} is a {kind} at runtime, a {want} in the stub"
            check_signature(node, getattr(cls, n), f"{name}.{n}")


@pytest.mark.parametrize("name", sorted(STUB_FUNCTIONS))
def test_functions(name):
    check_signature(STUB_FUNCTIONS[name], getattr(kubeleash, name), name)


def test_exception_attributes_exist_on_instances():
    with pytest.raises(kubeleash.PolicyError) as e:
        kubeleash.Policy.from_yaml("kind: Nope")
    assert isinstance(e.value.errors, list)
    p = kubeleash.Policy.from_yaml("apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec: {rules: []}\n")
    with pytest.raises(kubeleash.MaskError) as m:
        p.mask("GET", "/api/v1/pods", b"{")
    assert isinstance(m.value.code, str) and isinstance(m.value.safe, bytes)
    with pytest.raises(kubeleash.RequestError) as r:
        p.mask("GET", "api", b"{}")
    assert isinstance(r.value.code, str)


def test_package_is_typed():
    assert Path(kubeleash.__file__).with_name("py.typed").exists()
