"""run / Popen for profiles with network.mode = "allowlist": the sandbox joins a captured
namespace of its own, whose proxy (isolate.netproxy.proxy.SandboxNet) lives as long as it."""

from __future__ import annotations

import dataclasses
import os
import threading
from collections import OrderedDict
from typing import Any, Sequence

from ..launch import process, warm
from ..plan.plan import Plan
from ..profile.cache import load_profile
from .proxy import SandboxNet, proxy_env

_KEEP = 256  # ended sandboxes whose violations stay readable by id
_registry: "OrderedDict[str, SandboxNet]" = OrderedDict()
_registry_lock = threading.Lock()


def violations_for(sandbox_id: str, since: int = 0) -> list:
    """The refusals recorded so far for a sandbox (by Popen.netproxy_id), oldest first;
    since=N: those after the first N (N = len() of an earlier answer)."""
    with _registry_lock:
        net = _registry.get(sandbox_id)
    if net is None:
        return []
    return net.recorded(since)


def _register(net: SandboxNet) -> None:
    with _registry_lock:
        _registry[net.id] = net
        while len(_registry) > _KEEP:
            _registry.popitem(last=False)


def is_allowlist(profile: Any, overrides: Sequence[str] = ()) -> bool:
    """The profile has network.mode = "allowlist" (each launch then needs prepare())."""
    if isinstance(profile, Plan):
        return False
    return load_profile(profile, overrides).data["network"]["mode"] == "allowlist"


def prepare(profile: Any, overrides: Sequence[str]) -> tuple:
    """(profile to launch, its overrides, SandboxNet or None): an allowlist profile becomes
    one that joins the sandbox's own captured namespace, with the proxy variables set."""
    if isinstance(profile, Plan):   # compiled already: not an allowlist profile (those compile per launch)
        return profile, overrides, None
    prof = load_profile(profile, overrides)
    network = dict(prof.data["network"])
    if network["mode"] != "allowlist":
        return profile, overrides, None
    net = SandboxNet(network)
    try:
        d = prof.to_dict()
        d["network"] = {"mode": "netns", "netns": net.path}
        env = dict(d["env"]["set"])
        env.update(net.env())
        d["env"]["set"] = env
    except BaseException:
        net.close()
        raise
    _register(net)
    return d, (), net


def stand_in(profile):
    """For `isolate explain`: the profile whose plan an allowlist profile's launch resembles
    (network.mode = "none": an own namespace; the real launch joins its captured one)."""
    if profile.data["network"]["mode"] != "allowlist":
        return profile
    d = profile.to_dict()
    d["network"] = {"mode": "none", "pool": False}
    return load_profile(d)


class Popen(process.Popen):
    """isolate.Popen, and network.mode = "allowlist" works: `violations`, `netproxy_id`."""

    def __init__(self, args, *a, profile: Any = "default", overrides: Sequence[str] = (), **kw):
        launch_profile, launch_overrides, self._net = prepare(profile, overrides)
        self.netproxy_id = self._net.id if self._net else None
        try:
            super().__init__(args, *a, profile=launch_profile, overrides=launch_overrides, **kw)
        except BaseException:
            self.close_network()
            raise

    @property
    def violations(self) -> list:
        return violations_for(self.netproxy_id) if self.netproxy_id else []

    def close_network(self) -> None:
        if self._net is not None:
            self._net.close()

    def wait(self, timeout=None):
        rc = super().wait(timeout)
        self.close_network()
        return rc

    def poll(self):
        rc = super().poll()
        if rc is not None:
            self.close_network()
        return rc


def run(*popenargs, profile: Any = "default", overrides: Sequence[str] = (), **kwargs) -> process.Result:
    """isolate.run, and network.mode = "allowlist" works: Result.violations lists the refusals."""
    launch_profile, launch_overrides, net = prepare(profile, overrides)
    try:
        result = process.run(*popenargs, profile=launch_profile, overrides=launch_overrides, **kwargs)
    except process.TimeoutExpired as e:
        if net is not None and getattr(e, "result", None) is not None:
            e.result = dataclasses.replace(e.result, violations=tuple(violations_for(net.id)))
        raise
    finally:
        if net is not None:
            net.close()
    if net is None:
        return result
    return dataclasses.replace(result, violations=tuple(violations_for(net.id)))


class WarmPool(warm.WarmPool):
    """isolate.WarmPool, and network.mode = "allowlist" works: each warm sandbox is made
    ahead of time with a captured namespace and a proxy of its own (closed when its task's
    sandbox is reaped, or with the pool), so a task's Popen.violations / Result.violations
    list what its own network refused. Any other profile: as isolate.WarmPool."""

    def __init__(self, profile: Any = "default", size: int = 4, overrides: Sequence[str] = (), cwd=None):
        self._network = None
        if is_allowlist(profile, overrides):
            prof = load_profile(profile, overrides)
            self._network = dict(prof.data["network"])
            d = prof.to_dict()
            # A network namespace of its own, not from the pool: the launch joins the one
            # made for it (process.launch(network=)) instead.
            d["network"] = {"mode": "none", "pool": False}
            d["env"]["set"] = {**d["env"]["set"], **proxy_env()}
            profile, overrides = d, ()
        super().__init__(profile, size, overrides, cwd)

    def _prepare(self) -> process.Launched:
        if self._network is None:
            return super()._prepare()
        net = SandboxNet(self._network)
        try:
            _register(net)
            return process.launch_waiting(self.plan, os.fsencode(self.plan.cwd), network=net)
        except BaseException:
            net.close()
            raise
