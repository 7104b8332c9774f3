"""Profiles: the TOML schema, defined once, and the loader.

    validators.py  the validation primitives (Bool, Int, Str, Choice, Optional, ListOf, MapOf, Table)
    schema.py      SECTIONS: every field's dotted key, validator, default and doc
    loader.py      files, names, extends, TOML, merging, overrides, validation; Profile
    cache.py       load_profile(): loaded profiles kept until a file of theirs changes
    reference.py   reference_markdown(), generated from the schema
    oci.py         Docker/OCI seccomp profiles (JSON) read and checked (seccomp.oci)

The names below are this package's API; they are loaded on first use (tomllib and
the schema are not part of `import isolate`).

A profile is a TOML file.  Everything about its format lives in ``SECTIONS``
below: every field's dotted key, validator/normalizer, default and one-line
doc.  Validation, defaults, ``isolate explain`` and the generated reference
(``reference_markdown()``) all read that one table; nothing is written twice.

Public API
----------
``load(name_or_path, overrides=())``  a shipped/user profile name or a path
``from_toml(text, name)``             TOML text
``from_dict(data, name)``             a plain dict (may contain ``extends``)
``resolve_name(name)``                where a name or path points
``shipped_profiles()``                names of the profiles shipped with isolate
``reference_markdown()``              the schema as a markdown reference
``Profile``                           the immutable result (see its docstring)
``CAPABILITIES``                      capability name -> number
``SECTIONS`` / ``FIELDS``             the schema itself

Adding a section (filesystem, network, cgroup, ...) is one ``Section(...)``
entry appended to ``SECTIONS`` in schema.py, built from the small validators below
(``Bool``, ``Int``, ``Str``, ``Choice``, ``Optional``, ``ListOf``, ``MapOf``,
``Table``) or any callable that returns the normalized value and raises
``Invalid`` on bad input.

Every problem with a profile, whatever the input, is a ``ProfileError`` naming
the file, the dotted key (with list indexes) and what was expected.
"""

from __future__ import annotations

import importlib

__all__ = [
    "CAPABILITIES",
    "FIELDS",
    "SECTIONS",
    "Field",
    "Invalid",
    "Profile",
    "Section",
    "from_dict",
    "from_toml",
    "load",
    "load_profile",
    "profile_dirs",
    "reference_markdown",
    "resolve_name",
    "shipped_profiles",
]

# Where a name of the API is looked up, in order (PEP 562: on first use, so that
# `import isolate`, which needs only cache.py, does not load the schema).
_MODULES = ("loader", "schema", "validators", "reference", "cache")


def __getattr__(name: str):
    if name.startswith("__") or name in _MODULES or name == "oci":  # a submodule: the import system's
        raise AttributeError(name)
    for mod in _MODULES:
        module = importlib.import_module(f"{__name__}.{mod}")
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
