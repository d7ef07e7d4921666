"""Strawberry's extension runner, driving each extension's hooks directly.

For every operation Strawberry looks up each extension's four hooks again, asks `inspect`
what kind each is, wraps every generator hook with `contextlib.contextmanager` and enters
them through a `contextlib.ExitStack`. What kind a hook is depends on the extension's class
alone, so it is worked out once per class here; and a phase drives the hooks' generators
itself, with the semantics of ExitStack over contextmanager: entered in order, left in
reverse, an exception thrown into each, a hook that swallows it suppresses it, one that
raises another replaces it, an asynchronous hook refused in a synchronous operation.
tests/unit/test_extension_hooks.py holds this runner to Strawberry's, hook by hook.
"""

import enum
import inspect
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

from strawberry.extensions import SchemaExtension
from strawberry.extensions.context import (
    ExecutingContextManager,
    OperationContextManager,
    ParsingContextManager,
    ValidationContextManager,
)
from strawberry.extensions.runner import SchemaExtensionsRunner


class _Kind(enum.Enum):
    GENERATOR = "generator"
    PLAIN = "plain"
    ASYNCHRONOUS = "asynchronous"


_Hook = tuple[_Kind, Callable[[SchemaExtension], Any]]
_PHASES = (
    OperationContextManager.HOOK_NAME,
    ParsingContextManager.HOOK_NAME,
    ValidationContextManager.HOOK_NAME,
    ExecutingContextManager.HOOK_NAME,
)
_HOOKS: dict[tuple[type[SchemaExtension], str], _Hook | None] = {}


class _Plan:
    """What a schema's extension classes do, in their order: each phase's hooks (by the
    extension's position) and whose get_results to ask."""

    __slots__ = ("hooks", "results")

    def __init__(self, classes: tuple[type[SchemaExtension], ...]) -> None:
        self.hooks: dict[str, list[tuple[int, _Kind, Callable[[SchemaExtension], Any]]]] = {
            name: [
                (position, *hook)
                for position, extension_class in enumerate(classes)
                if (hook := _hook(extension_class, name)) is not None
            ]
            for name in _PHASES
        }
        self.results: list[tuple[int, bool]] = [
            (position, inspect.iscoroutinefunction(extension_class.get_results))
            for position, extension_class in enumerate(classes)
            if extension_class.get_results is not SchemaExtension.get_results
        ]


_PLANS: dict[tuple[type[SchemaExtension], ...], _Plan] = {}


def _hook(extension_class: type[SchemaExtension], name: str) -> _Hook | None:
    """What Strawberry's ExtensionContextManagerBase.get_hook would make of this hook."""
    key = (extension_class, name)
    if key in _HOOKS:
        return _HOOKS[key]
    function = getattr(extension_class, name)
    hook: _Hook | None
    if function is getattr(SchemaExtension, name):
        hook = None
    elif inspect.isgeneratorfunction(function):
        hook = (_Kind.GENERATOR, function)
    elif inspect.isasyncgenfunction(function) or inspect.iscoroutinefunction(function):
        hook = (_Kind.ASYNCHRONOUS, function)
    elif callable(function):
        hook = (_Kind.PLAIN, function)
    else:
        raise ValueError(
            f"Hook {name} on {extension_class} must be callable, received {function!r}"
        )
    _HOOKS[key] = hook
    return hook


class _Phase:
    """One lifecycle phase's hooks of every extension, as one context manager."""

    __slots__ = ("_entered", "_hooks", "_name")

    def __init__(
        self,
        name: str,
        hooks: list[tuple[SchemaExtension, _Kind, Callable[[SchemaExtension], Any]]],
    ) -> None:
        self._name = name
        self._hooks = hooks
        self._entered: list[Iterator[None]] = []

    def __enter__(self) -> None:
        entered = self._entered
        for extension, kind, function in self._hooks:
            if kind is _Kind.GENERATOR:
                generator: Iterator[None] = function(extension)
                try:
                    next(generator)
                except StopIteration:
                    raise RuntimeError("generator didn't yield") from None
                entered.append(generator)
            elif kind is _Kind.PLAIN:
                function(extension)  # Strawberry's wrapper does nothing on the way out
            else:
                raise RuntimeError(
                    f"SchemaExtension hook {extension}.{self._name} "
                    "failed to complete synchronously."
                )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Like Strawberry's, which drops its ExitStack's answer: a hook that swallows an
        # exception spares the hooks entered before it, but the phase never suppresses it.
        entered = self._entered
        if not entered:
            return
        if exc_type is not None and exc is None:
            exc = exc_type()
        pending = False
        for generator in reversed(entered):
            try:
                if _leave(generator, exc):
                    pending, exc = False, None
            except BaseException as raised:  # noqa: BLE001 - what ExitStack does
                if exc is not None and raised is not exc and raised.__context__ is None:
                    raised.__context__ = exc
                pending, exc = True, raised
        if pending and exc is not None:
            raise exc


def _leave(generator: Iterator[None], exc: BaseException | None) -> bool:
    """Resumes a hook after its phase, as contextmanager's __exit__; True if it swallowed
    the exception."""
    if exc is None:
        try:
            next(generator)
        except StopIteration:
            return False
        raise RuntimeError("generator didn't stop")
    try:
        generator.throw(exc)  # type: ignore[attr-defined]
    except StopIteration as stop:
        return stop is not exc
    except BaseException as raised:
        if raised is exc:
            return False
        raise
    try:
        raise RuntimeError("generator didn't stop after throw()")
    finally:
        generator.close()  # type: ignore[attr-defined]


class KeptHooksRunner(SchemaExtensionsRunner):
    # Strawberry only enters and leaves what the phase methods return: a _Phase does both
    # as its context managers would, without being one of their subclasses.

    def __init__(
        self, execution_context: Any, extensions: list[SchemaExtension] | None = None
    ) -> None:
        super().__init__(execution_context, extensions)
        classes = tuple([type(extension) for extension in self.extensions])
        plan = _PLANS.get(classes)
        if plan is None:
            plan = _PLANS[classes] = _Plan(classes)
        self._plan = plan

    def _phase(self, name: str) -> Any:
        extensions = self.extensions
        hooks = [(extensions[at], kind, function) for at, kind, function in self._plan.hooks[name]]
        return _Phase(name, hooks)

    def operation(self) -> OperationContextManager:
        return self._phase(OperationContextManager.HOOK_NAME)  # type: ignore[no-any-return]

    def validation(self) -> ValidationContextManager:
        return self._phase(ValidationContextManager.HOOK_NAME)  # type: ignore[no-any-return]

    def parsing(self) -> ParsingContextManager:
        return self._phase(ParsingContextManager.HOOK_NAME)  # type: ignore[no-any-return]

    def executing(self) -> ExecutingContextManager:
        return self._phase(ExecutingContextManager.HOOK_NAME)  # type: ignore[no-any-return]

    def get_extensions_results_sync(self) -> dict[str, Any]:
        # Only extensions that override get_results can add to it: the default gives {}.
        data: dict[str, Any] = {}
        for at, asynchronous in self._plan.results:
            if asynchronous:
                raise RuntimeError("Cannot use async extension hook during sync execution")
            data.update(self.extensions[at].get_results())  # type: ignore[arg-type]
        return data
