"""`isolate doctor`: a report over the layers below: what this kernel and this user allow
(isolate.kernel.features, whose probe API is also reachable here), whether each
shipped profile compiles and can run here, how its filesystem view is enforced for
this caller, and the host ids root's sandboxes run as.

The probes themselves (features(), requirements(), check(), ISOLATE_DOCTOR_DISABLE)
are isolate.kernel.features: the plan reads them too, and must not import this report.
"""

from __future__ import annotations

import json
import os
import sys

from . import profile as profile_mod
from .errors import UnsupportedError
from .fuzz import engines as fuzz_engines
from .kernel.features import (DISABLE_ENV, DISABLED_DETAIL, FEATURE_KEYS, Feature, check, features, landlock_abi,
                              requirements)
from .launch import hostids, plans
from .plan import compile as compile_mod

__all__ = ["Feature", "features", "requirements", "check", "profiles_status", "landlock_abi", "main",
           "DISABLE_ENV", "FEATURE_KEYS", "DISABLED_DETAIL", "enforcement_status", "host_ids_status"]


def _profiles_status() -> tuple[list[tuple[str, bool, str]], str | None]:
    try:
        names = list(profile_mod.shipped_profiles())
    except Exception as e:  # noqa: BLE001 - say so instead of failing
        return [], f"unknown: cannot list the shipped profiles ({type(e).__name__}: {e})"
    out = []
    for name in names:
        try:
            plan = plans.compile_profile(profile_mod.load(name))
        except Exception as e:  # noqa: BLE001
            if isinstance(e, UnsupportedError):
                out.append((name, False, str(e)))
            else:
                out.append((name, False, f"unknown: the profile does not compile ({type(e).__name__}: {e})"))
            continue
        try:
            check(plan)
        except Exception as e:  # noqa: BLE001 - UnsupportedError, reported as is
            out.append((name, False, str(e)))
            continue
        note = ""
        if getattr(plan, "cgroup_mode", None) == "rlimits":  # runnable, but weaker than a cgroup: say so
            limits = ", ".join(f"cgroup.{k}" for k in dict(plan.cgroup or {}))
            note = (f"with {limits} as per-process rlimits (RLIMIT_AS, RLIMIT_NPROC): no usable cgroup "
                    "here (cgroup.fallback = \"rlimits\")")
        out.append((name, True, note))
    return out, None


def profiles_status() -> list[tuple[str, bool, str]]:
    """(name, runnable here, why not) for each shipped profile; reasons starting
    "unknown:" mean the profile could not be loaded or compiled to find out."""
    return _profiles_status()[0]


def enforcement_status() -> dict:
    """For this caller: what enforce = "either" becomes, each shipped profile's enforcement
    and, for Landlock-only mode, what becomes of every profile field."""
    euid = os.geteuid()
    userns = features()["user_namespaces"]
    either = "namespaces" if userns.available else "landlock-only"
    out = {"uid": euid, "either": either, "user_namespaces": userns.detail, "profiles": {}}
    try:
        for name in profile_mod.shipped_profiles():
            out["profiles"][name] = compile_mod.enforcement(profile_mod.load(name))[0]
    except Exception as e:  # noqa: BLE001 - reported, never fatal here
        out["profiles_error"] = f"{type(e).__name__}: {e}"
    data = profile_mod.from_dict({}).data
    out["landlock_only"] = [{"field": f, "verdict": v, "how": h}
                            for f, v, h in compile_mod.landlock_fields(data, euid, "landlock-only", everything=True)]
    return out


def main(json_output: bool = False) -> int:
    """`isolate doctor`: the feature table, then whether each shipped profile can run here."""
    feats = features()
    profiles, note = _profiles_status()
    enforcement = enforcement_status()
    ids = host_ids_status()
    if json_output:
        doc = {
            "features": {k: f.as_dict() for k, f in feats.items()},
            "profiles": {n: {"runnable": ok, "reason": why} for n, ok, why in profiles},
            "enforcement": enforcement,
            "host_ids": ids,
            "fuzz_engines": {k: e.as_dict() for k, e in fuzz_engines.detect().items()},
        }
        if note:
            doc["profiles_note"] = note
        print(json.dumps(doc, indent=2))
        return 0
    width = max(len(k) for k in feats)
    print(f"{'feature':{width}}  ok   detail")
    for k, f in feats.items():
        print(f"{k:{width}}  {'yes' if f.available else 'no ':3}  {f.detail}")
    print("\nprofiles:")
    if note:
        print(f"  {note}")
    pw = max((len(n) for n, _, _ in profiles), default=0)
    for name, ok, why in profiles:
        state = "runnable" if ok else ("unknown" if why.startswith("unknown:") else "not runnable")
        print(f"  {name:{pw}}  {state}" + (f"  {why}" if why else ""))
    print(f"\nenforcement for uid {enforcement['uid']}:")
    for name, mode in enforcement["profiles"].items():
        print(f"  {name:{pw}}  {mode}")
    if enforcement["either"] == "namespaces":
        print('  enforce = "either" here: namespaces (user namespaces work)')
    else:
        print(f'  enforce = "either" here: landlock-only, no namespace at all '
              f'({enforcement["user_namespaces"]})')
    print('\nLandlock-only mode (enforce = "either" without user namespaces), field by field'
          + (" (what applies here):" if enforcement["either"] == "landlock-only" else ":"))
    fw = max(len(r["field"]) for r in enforcement["landlock_only"])
    for r in enforcement["landlock_only"]:
        print(f"  {r['field']:{fw}}  {r['verdict']:11}  {r['how']}")
    print(f"\nhost ids of root's sandboxes: {ids['first']}..{ids['last']}, "
          + ("free of host accounts" if not ids["conflicts"] else "CLASH, root's new-view sandboxes are refused:"))
    for c in ids["conflicts"]:
        print(f"  {c['file']}: {c['name']} uses {c['first']}..{c['last']}")
    print("\nfuzzing engines (isolate fuzz run --engine):")
    for line in fuzz_engines.engines_report():
        print(f"  {line}")
    sys.stdout.flush()
    return 0


def host_ids_status() -> dict:
    """The range of host ids root's sandboxes run as, and any host account inside it."""
    return {"first": hostids.BASE, "last": hostids.BASE + hostids.COUNT - 1,
            "conflicts": [{"file": f, "name": n, "first": lo, "last": hi} for f, n, lo, hi in hostids.conflicts()]}
