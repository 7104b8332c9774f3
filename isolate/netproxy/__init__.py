"""network.mode = "allowlist": a sandbox that reaches only the hosts its profile names.

isolate.netproxy.run / Popen launch such a profile (any other profile runs as with
isolate.run / Popen); Result.violations and Popen.violations list what was refused, and
violations_for(sandbox_id) reads them by Popen.netproxy_id (stats_for: the proxy's
counters); isolate.netproxy.WarmPool
is isolate.WarmPool for such profiles (each warm sandbox with a namespace and proxy of
its own). See docs/network.md.
"""

from .proxy import SandboxNet, set_resolver
from .sandbox import Popen, WarmPool, is_allowlist, prepare, run, stand_in, stats_for, violations_for

__all__ = ["Popen", "WarmPool", "is_allowlist", "prepare", "run", "stand_in", "stats_for", "violations_for", "set_resolver",
           "SandboxNet"]
