"""Strawberry's extension runner, with each extension class's hooks wrapped once per process.

For every operation Strawberry looks up each extension's four hooks again, asks `inspect`
whether each is a generator function and wraps it with `contextlib.contextmanager`, which
copies its metadata with `functools.update_wrapper`: work that, for a small operation, weighs
more than the hooks' own. What that produces depends on the extension's class alone, so it is
kept per class here; entering and leaving the hooks is still Strawberry's, in its order.
"""

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator

from strawberry.extensions import SchemaExtension
from strawberry.extensions.context import (
    ExecutingContextManager,
    ExtensionContextManagerBase,
    OperationContextManager,
    ParsingContextManager,
    ValidationContextManager,
    WrappedHook,
)
from strawberry.extensions.runner import SchemaExtensionsRunner

_HookFactory = Callable[[SchemaExtension], contextlib.AbstractContextManager[None]]
_Wrapper = Callable[[ExtensionContextManagerBase, SchemaExtension], WrappedHook | None]
_WRAPPERS: dict[tuple[type[SchemaExtension], str], _Wrapper] = {}


def _wrapper(extension_class: type[SchemaExtension], name: str) -> _Wrapper:
    """How to wrap this class's hook for an operation: as Strawberry would, in less time."""
    hook: Callable[[SchemaExtension], Iterator[None]] = getattr(extension_class, name)
    if hook is getattr(SchemaExtension, name):
        return lambda _manager, _extension: None
    if not inspect.isgeneratorfunction(hook):
        return ExtensionContextManagerBase.get_hook  # async and plain callables
    factory: _HookFactory = contextlib.contextmanager(hook)
    return lambda _manager, extension: WrappedHook(
        extension=extension, hook=functools.partial(factory, extension), is_async=False
    )


class _KeptHooks(ExtensionContextManagerBase):
    def get_hook(self, extension: SchemaExtension) -> WrappedHook | None:
        key = (type(extension), self.HOOK_NAME)
        wrap = _WRAPPERS.get(key)
        if wrap is None:
            wrap = _WRAPPERS[key] = _wrapper(*key)
        return wrap(self, extension)


class _Operation(_KeptHooks, OperationContextManager):
    pass


class _Validation(_KeptHooks, ValidationContextManager):
    pass


class _Parsing(_KeptHooks, ParsingContextManager):
    pass


class _Executing(_KeptHooks, ExecutingContextManager):
    pass


class KeptHooksRunner(SchemaExtensionsRunner):
    def operation(self) -> OperationContextManager:
        return _Operation(self.extensions)

    def validation(self) -> ValidationContextManager:
        return _Validation(self.extensions)

    def parsing(self) -> ParsingContextManager:
        return _Parsing(self.extensions)

    def executing(self) -> ExecutingContextManager:
        return _Executing(self.extensions)
