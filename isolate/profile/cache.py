"""Profiles loaded once: load_profile() keeps each loaded Profile until one of its files changes.

(The launch layer's isolate.run/Popen/WarmPool and isolate.load_profile go through it.)
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any, Mapping, Sequence

from ..errors import ProfileError


def _loader():
    from . import loader  # tomllib and the schema (~15 ms): not part of `import isolate`, loaded on first use

    return loader


_profile_cache: dict = {}
_profile_lock = threading.Lock()


def _signature(files) -> tuple:
    out = []
    for f in files:
        try:
            st = os.stat(f)
            out.append((str(f), st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((str(f), None, None))
    return tuple(out)


def load_profile(profile: Any, overrides: Sequence[str] = ()):
    """A Profile from a name, a path, a dict or a Profile; files re-read only when changed."""
    profile_mod = _loader()
    if isinstance(profile, profile_mod.Profile):
        if overrides:
            raise ProfileError("overrides need a profile name or path", key="--set")
        return profile
    if isinstance(profile, Mapping):
        # Validating a dict costs about a millisecond: remember it by its content.
        try:
            content = json.dumps(profile, sort_keys=True, default=repr)
        except (TypeError, ValueError, RecursionError):
            return profile_mod.from_dict(dict(profile), overrides=tuple(overrides))
        return _cached(("dict", content, tuple(overrides), os.getcwd()),
                       lambda: profile_mod.from_dict(dict(profile), overrides=tuple(overrides)))
    if not isinstance(profile, (str, os.PathLike)):
        raise ProfileError(f"expected a profile name, path, dict or Profile, got {type(profile).__name__}")
    return _cached((os.fspath(profile), tuple(overrides), os.getcwd()),
                   lambda: profile_mod.load(os.fspath(profile), overrides))


def _cached(key, load):
    """The profile cached under `key` while none of its files changed, else load() it."""
    with _profile_lock:
        hit = _profile_cache.get(key)
    if hit is not None and _signature(hit[0].files) == hit[1]:
        return hit[0]
    loaded = load()
    with _profile_lock:
        if len(_profile_cache) > 256:
            _profile_cache.clear()
        _profile_cache[key] = (loaded, _signature(loaded.files))
    return loaded
