import ast
import importlib.metadata
import pkgutil
import re
import sys
import types
from pathlib import Path

import pytest
from packaging.version import Version

import asgiref

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_version_mirrors_upstream_api_level() -> None:
    assert asgiref.__version__ == "3.13.0"


@pytest.mark.asgire_only
def test_the_installed_distribution_is_asgire_not_asgiref() -> None:
    # One wheel installs one distribution: asking for asgiref's metadata
    # finds none; asgiref.__version__ names the API level.
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.version("asgiref")
    assert importlib.metadata.version("asgire")


# What ``from asgiref.<module> import *`` binds in upstream asgiref 3.13.0.
# Most upstream modules have no ``__all__``, so the star import brings every
# public name they define or import, modules and typing helpers included;
# code written against upstream may rely on any of them.
STAR_IMPORTS = {
    "asgiref": [],
    "asgiref.compatibility": [
        "double_to_single_callable",
        "guarantee_single_callable",
        "inspect",
        "is_double_callable",
        "iscoroutinefunction",
    ],
    "asgiref.current_thread_executor": [
        "Any",
        "Callable",
        "CurrentThreadExecutor",
        "Executor",
        "Future",
        "ParamSpec",
        "TypeVar",
        "deque",
        "threading",
    ],
    "asgiref.local": ["Any", "Local", "asyncio", "contextvars", "final", "threading"],
    "asgiref.server": [
        "StatelessServer",
        "asyncio",
        "guarantee_single_callable",
        "logger",
        "logging",
        "time",
        "traceback",
    ],
    "asgiref.sync": [
        "Any",
        "AsyncSingleThreadContext",
        "AsyncToSync",
        "Awaitable",
        "Callable",
        "Coroutine",
        "CurrentThreadExecutor",
        "Dict",
        "Executor",
        "Future",
        "Generic",
        "InvalidStateError",
        "List",
        "Local",
        "Optional",
        "ParamSpec",
        "SyncToAsync",
        "TYPE_CHECKING",
        "ThreadPoolExecutor",
        "ThreadSensitiveContext",
        "TypeVar",
        "async_to_sync",
        "asyncio",
        "contextvars",
        "functools",
        "inspect",
        "iscoroutinefunction",
        "markcoroutinefunction",
        "os",
        "overload",
        "sync_to_async",
        "sys",
        "threading",
        "warnings",
        "weakref",
    ],
    "asgiref.testing": [
        "ApplicationCommunicator",
        "asyncio",
        "contextvars",
        "guarantee_single_callable",
        "time",
    ],
    "asgiref.timeout": [
        "Any",
        "Optional",
        "TracebackType",
        "asyncio",
        "timeout",
        "warnings",
    ],
    "asgiref.typing": [
        "ASGI2Application",
        "ASGI2Protocol",
        "ASGI3Application",
        "ASGIApplication",
        "ASGIReceiveCallable",
        "ASGIReceiveEvent",
        "ASGISendCallable",
        "ASGISendEvent",
        "ASGIVersions",
        "HTTPDisconnectEvent",
        "HTTPRequestEvent",
        "HTTPResponseBodyEvent",
        "HTTPResponsePathsendEvent",
        "HTTPResponseStartEvent",
        "HTTPResponseTrailersEvent",
        "HTTPScope",
        "HTTPServerPushEvent",
        "LifespanScope",
        "LifespanShutdownCompleteEvent",
        "LifespanShutdownEvent",
        "LifespanShutdownFailedEvent",
        "LifespanStartupCompleteEvent",
        "LifespanStartupEvent",
        "LifespanStartupFailedEvent",
        "Scope",
        "WWWScope",
        "WebSocketAcceptEvent",
        "WebSocketCloseEvent",
        "WebSocketConnectEvent",
        "WebSocketDisconnectEvent",
        "WebSocketReceiveEvent",
        "WebSocketResponseBodyEvent",
        "WebSocketResponseStartEvent",
        "WebSocketScope",
        "WebSocketSendEvent",
    ],
    "asgiref.wsgi": [
        "AsyncToSync",
        "SpooledTemporaryFile",
        "WsgiToAsgi",
        "WsgiToAsgiInstance",
        "defaultdict",
        "sync_to_async",
        "sys",
    ],
}


def test_every_module_is_listed() -> None:
    # Upstream's modules; private ones (asgire's own mechanisms) are not.
    found = {"asgiref"} | {
        f"asgiref.{info.name}"
        for info in pkgutil.iter_modules(asgiref.__path__)
        if not info.name.startswith("_")
    }
    assert found == set(STAR_IMPORTS)


@pytest.mark.parametrize("module", sorted(STAR_IMPORTS))
def test_star_import_binds_upstreams_names(module: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from {module} import *", namespace)
    del namespace["__builtins__"]
    if module == "asgiref":
        # The package binds each submodule once imported, upstream too.
        for name in list(namespace):
            if getattr(namespace[name], "__name__", None) == f"asgiref.{name}":
                del namespace[name]
    assert sorted(namespace) == STAR_IMPORTS[module]
    # A name upstream binds to a module is that module.
    for name, value in namespace.items():
        if isinstance(value, types.ModuleType):
            assert value is sys.modules[name]


DIFFERENCES = Path(__file__).parent.parent / "docs" / "differences.md"


def pinning_tests() -> list[str]:
    return re.findall(r"`(tests/[\w/]+\.py::\w+)`", DIFFERENCES.read_text())


def test_the_differences_page_names_tests() -> None:
    assert len(pinning_tests()) > 20


@pytest.mark.parametrize("node", pinning_tests())
def test_each_difference_is_pinned_by_an_asgire_only_test(node: str) -> None:
    path, name = node.split("::")
    tree = ast.parse((DIFFERENCES.parent.parent / path).read_text())
    [function] = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name == name
    ]
    # Marked itself, through the parameters it is pinned by, or by its module.
    module_marks = [
        statement.value
        for statement in tree.body
        if isinstance(statement, ast.Assign)
        and any(ast.unparse(target) == "pytestmark" for target in statement.targets)
    ]
    assert any(
        "asgire_only" in ast.unparse(mark)
        for mark in [*function.decorator_list, *module_marks]
    )


def _declared_version() -> Version:
    found = re.search(r'^version = "([^"]+)"$', PYPROJECT.read_text(), re.MULTILINE)
    assert found, "pyproject.toml declares no version"
    return Version(found.group(1))


@pytest.mark.asgire_only
def test_distribution_version_is_a_post_release_of_the_mirrored_level() -> None:
    # Releases of asgire are post-releases of the upstream level they mirror
    # (3.13.0.post1, .post2...), so each sorts above the asgire 3.13.0 already
    # published by the index and above upstream's own 3.13.0.
    declared = _declared_version()
    assert declared.is_postrelease
    assert declared.base_version == asgiref.__version__
    assert declared > Version(asgiref.__version__)
    assert Version(importlib.metadata.version("asgire")) == declared
