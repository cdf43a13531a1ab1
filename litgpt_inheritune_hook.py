"""Teaches litgpt about litgpt-inheritune without touching litgpt's files.

litgpt 0.5.x has no plugin mechanism: its CLI is the fixed dict ``PARSER_DATA`` in ``litgpt/__main__.py`` and
its model configs are the fixed list ``litgpt.config.configs``. ``litgpt_inheritune.pth`` imports this module at
interpreter start; it only adds a finder to ``sys.meta_path`` (nothing heavy is imported here). When litgpt later
imports one of the modules below, the finder runs the module as usual and then calls our function on it:

- ``litgpt.config``: register the Inheritune model configs (``litgpt pretrain --model_name open_llama_3b-inheritune-13L``);
- ``litgpt.__main__``: add ``inheritune`` to litgpt's CLI (``litgpt inheritune init ...``).

Uninstalling the package removes the .pth file and with it this hook.
"""

import importlib
import importlib.abc
import importlib.machinery
import sys

AFTER_IMPORT = {
    "litgpt.config": ("litgpt_inheritune.configs", "register_configs"),
    "litgpt.__main__": ("litgpt_inheritune.cli", "extend_litgpt_cli"),
}


class _ExtendingLoader(importlib.machinery.SourceFileLoader):
    def exec_module(self, module):
        super().exec_module(module)
        module_name, function_name = AFTER_IMPORT[module.__name__]
        try:
            function = getattr(importlib.import_module(module_name), function_name)
        except ImportError as error:  # a broken install must never break litgpt itself
            print(f"litgpt-inheritune: could not extend {module.__name__}: {error}", file=sys.stderr)
            return
        function(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in AFTER_IMPORT:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return spec
        spec.loader = _ExtendingLoader(spec.loader.name, spec.loader.path)
        return spec


if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
    sys.meta_path.insert(0, _Finder())
