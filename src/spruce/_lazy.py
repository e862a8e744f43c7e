"""Lazy package attributes: a public name is imported from its module on first use."""

import importlib


def lazy_exports(namespace, exports):
    """Returns (__getattr__, __dir__) for the package whose globals are `namespace`.

    `exports` maps each public name to the module that defines it. A resolved name
    is cached in the package's namespace, so each costs one import.
    """
    package = namespace["__name__"]

    def __getattr__(name):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__():
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
