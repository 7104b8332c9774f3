"""run / Popen / WarmPool for profiles with network.mode = "allowlist": the sandbox joins a
captured namespace of its own, whose proxy (isolate.netproxy.proxy.SandboxNet) lives as
long as it."""

from __future__ import annotations

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


def stats_for(sandbox_id: str) -> dict:
    """The proxy's counters for a sandbox (by Popen.netproxy_id): SandboxNet.counters()."""
    with _registry_lock:
        net = _registry.get(sandbox_id)
    return {} if net is None else net.counters()


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


def launch_profile(prof) -> dict:
    """The profile an allowlist profile `prof` is launched as: a network namespace of its own
    (mode "none", not from the pool), which the launch replaces by the captured one made for
    the sandbox (Popen(network=), process.launch(network=)), and the proxy variables. The
    same for every launch of `prof`: its plan is compiled once."""
    d = prof.to_dict()
    d["network"] = {"mode": "none", "pool": False}
    d["env"]["set"] = {**d["env"]["set"], **proxy_env()}
    return d


def prepare(profile: Any, overrides: Sequence[str]) -> tuple:
    """(profile to launch, its overrides, SandboxNet or None): for an allowlist profile,
    launch_profile() and the sandbox's captured namespace with its proxy, to be given to
    the launch as Popen(network=...); any other profile as it is."""
    if isinstance(profile, Plan):   # compiled already: not an allowlist profile (those cannot compile)
        return profile, overrides, None
    prof = load_profile(profile, overrides)
    network = dict(prof.data["network"])
    if network["mode"] != "allowlist":
        return profile, overrides, None
    d = launch_profile(prof)
    net = SandboxNet(network)
    _register(net)
    return d, (), net


def stand_in(profile):
    """For `isolate explain`: the profile an allowlist profile is launched as (an own
    namespace, network.mode "none"; the launch joins the captured one made for it)."""
    if profile.data["network"]["mode"] != "allowlist":
        return profile
    return load_profile(launch_profile(profile))


class Popen(process.Popen):
    """isolate.Popen, and network.mode = "allowlist" works: `violations`, `netproxy_id`."""

    def __init__(self, args, *a, profile: Any = "default", overrides: Sequence[str] = (), **kw):
        launch_profile_, launch_overrides, self._net = prepare(profile, overrides)
        self.netproxy_id = self._net.id if self._net else None
        try:
            super().__init__(args, *a, profile=launch_profile_, overrides=launch_overrides, network=self._net, **kw)
        except BaseException:
            self.close_network()
            raise

    def close_network(self) -> None:
        """Close the sandbox's proxy now (it is closed when the sandbox is reaped anyway)."""
        if self._net is not None:
            self._net.close()


def run(*popenargs, profile: Any = "default", overrides: Sequence[str] = (), **kwargs) -> process.Result:
    """isolate.run, and network.mode = "allowlist" works: Result.violations lists the refusals."""
    launch_profile_, launch_overrides, net = prepare(profile, overrides)
    try:
        return process.run(*popenargs, profile=launch_profile_, overrides=launch_overrides, network=net, **kwargs)
    finally:
        if net is not None:
            net.close()


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
            profile, overrides = launch_profile(prof), ()
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
