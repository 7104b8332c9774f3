"""The `isolate` command: a thin front over the library.

Exit status of `isolate run`: the program's own code, or 128+N when a signal N ended
it; 2 for a bad profile or bad usage; 125 when the sandbox could not be set up; 126
when the program may not be executed; 127 when it was not found.

The library is imported inside each command, not here: `isolate --help` must not pay
for `import isolate` (~40 ms). The layers below never import cli.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

EXIT_USAGE = 2
EXIT_SETUP = 125
EXIT_NOEXEC = 126
EXIT_NOTFOUND = 127

_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
              signal.SIGWINCH)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, like every other bad input
        self.print_usage(sys.stderr)
        print(f"isolate: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="isolate", description="Run programs in sandboxes described by declarative profiles.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    r = sub.add_parser("run", help="run a command in a sandbox",
                       description="Run COMMAND in a sandbox built from PROFILE. Exits with the command's "
                                   "status (128+N if signal N ended it).")
    r.add_argument("-p", "--profile", default="default",
                   help="profile name (see `isolate profiles`) or path to a .toml file [default]")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a profile field, e.g. --set rlimits.nofile=64 (repeatable)")
    r.add_argument("-C", "--cwd", help="working directory inside the sandbox (default: the profile's)")
    r.add_argument("-e", "--env", action="append", default=[], metavar="NAME=VALUE",
                   help="add an environment variable (repeatable)")
    r.add_argument("-t", "--timeout", type=float, help="kill the whole sandbox after this many seconds")
    r.add_argument("--timing", action="store_true", help="print where the launch time went, on stderr")
    r.add_argument("--pty", action="store_true",
                   help="give the command a terminal of its own (same as --set fds.pty=true): a fresh pty, "
                        "relayed to this one, resizes included")
    r.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARG...]")

    e = sub.add_parser("explain", help="print a resolved profile and its seccomp filter",
                       description="Print PROFILE after `extends` and --set are applied, the plan compiled "
                                   "from it, and its seccomp filter in readable form.")
    e.add_argument("profile", help="profile name or path")
    e.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    e.add_argument("--json", action="store_true", help="print the resolved profile as JSON only")

    sub.add_parser("profiles", help="list the profiles that can be named with -p")
    sub.add_parser("reference", help="print the profile reference (markdown), generated from the schema")
    m = sub.add_parser("mcp", help="serve isolate sessions to MCP clients (stdio, or streamable HTTP)",
                       description="An MCP server (needs the mcp extra: pip install 'isolate-sandbox[mcp]') with "
                                   "codex-style tools exec_command and write_stdin, plus read_file, write_file and "
                                   "list_dir. Each client session gets its own isolate session of PROFILE.")
    m.add_argument("-p", "--profile", default="agent", help="profile of each client's session [agent]")
    m.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a profile field (repeatable)")
    m.add_argument("-w", "--workspace", help="the sessions' workspace directory (default: the current directory)")
    m.add_argument("--http", metavar="HOST:PORT",
                   help="serve streamable HTTP at http://HOST:PORT/mcp instead of stdio")
    m.add_argument("--idle-timeout", type=float, default=3600.0,
                   help="close a client's session after this many idle seconds [3600]")
    d = sub.add_parser("doctor", help="report what this kernel and user can enforce")
    d.add_argument("--json", action="store_true")

    f = sub.add_parser("fuzz", help="run fuzzing jobs in sandboxes (isolate.fuzz)")
    fsub = f.add_subparsers(dest="fuzz_command", metavar="FUZZCOMMAND", parser_class=_Parser)
    fr = fsub.add_parser("run", help="fuzz TARGET: one sandbox of the fuzz profile per job, then triage",
                         description="Run --jobs fuzzing jobs of --engine on TARGET, each in its own sandbox "
                                     "(profile fuzz), for --time seconds; artifacts are triaged into OUT/crashes/ "
                                     "and OUT/summary.json.")
    fr.add_argument("target", metavar="TARGET")
    fr.add_argument("target_args", nargs="*", metavar="ARGS", help="the target's arguments (@@: the input file)")
    fr.add_argument("--engine", required=True, help="libfuzzer, afl, honggfuzz or plain")
    fr.add_argument("--corpus", required=True, help="seed corpus directory (read-only to the jobs)")
    fr.add_argument("--out", required=True, help="output directory")
    fr.add_argument("--jobs", type=int, default=1)
    fr.add_argument("--time", type=float, default=60.0, help="seconds per job [60]")
    fr.add_argument("--timeout", type=float, default=25.0, help="seconds per input [25]")
    fr.add_argument("--rss-limit-mb", type=int, default=2048, help="engine RSS limit; the cgroup gets +1024 [2048]")
    fr.add_argument("--json", action="store_true", help="JSON lines on stdout instead of the table")
    fsub.add_parser("engines", help="which fuzzing engines are installed here")
    t = fsub.add_parser("triage", help="replay crash inputs in fresh sandboxes, classify and deduplicate them",
                        description="Replay each FILE in fresh sandboxes (--runs times), parse the sanitizer "
                                    "report into a crash type, frames and state, merge inputs of one state, and "
                                    "write OUT/crashes/<state-id>/, OUT/crashes.sqlite3 and OUT/summary.json.")
    t.add_argument("--out", required=True, metavar="DIR", help="output directory (created; reruns add to it)")
    t.add_argument("--engine", default="libfuzzer", help="libfuzzer (default), afl, honggfuzz or plain")
    t.add_argument("--runs", type=int, default=3, help="replays of each input, each in a fresh sandbox [3]")
    t.add_argument("--timeout", type=float, default=25.0, help="seconds per replay before it is a Timeout [25]")
    t.add_argument("--rss-limit-mb", type=int, default=2048, help="the engine's memory limit [2048]")
    t.add_argument("-p", "--profile", default=None, help="sandbox profile (default: the fuzz profile)")
    t.add_argument("--minimize", action="store_true", help="shrink each crash with the engine's minimizer, "
                                                            "keeping its state")
    t.add_argument("--replayer", default="auto", help="libFuzzer targets: auto (default: the replay shim, no "
                                                      "libFuzzer start, where the target takes it) or libfuzzer")
    t.add_argument("--json", action="store_true", help="print the summary as JSON")
    t.add_argument("target", metavar="TARGET", help="the fuzz target (sanitizer build)")
    t.add_argument("files", nargs="+", metavar="FILE", help="inputs to triage")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "explain":
            return _explain(args)
        if args.command == "profiles":
            return _profiles()
        if args.command == "reference":
            from isolate import profile as profile_mod

            sys.stdout.write(profile_mod.reference_markdown())
            return 0
        if args.command == "mcp":
            return _mcp(args)
        if args.command == "doctor":
            from isolate import doctor

            return doctor.main(json_output=args.json)
        if args.command == "fuzz" and args.fuzz_command == "triage":
            return _fuzz_triage(args)
        if args.command == "fuzz":
            return _fuzz(args)
        _parser().print_help()
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except Exception as e:  # every failure is one line, never a traceback
        return _report(e)


def _report(e: BaseException) -> int:
    from isolate import errors
    from isolate.launch import process

    # One line, whatever the message holds (a key given with a line break, say).
    text = str(e).replace("\r", "\\r").replace("\n", "\\n")
    print(f"isolate: {text}", file=sys.stderr)
    if isinstance(e, errors.ProfileError):
        return EXIT_USAGE
    if isinstance(e, process.ExecutableNotFound):
        return EXIT_NOTFOUND
    if isinstance(e, process.ExecutablePermission):
        return EXIT_NOEXEC
    if isinstance(e, (errors.SandboxSetupError, OSError, ValueError)):
        return EXIT_SETUP
    print("isolate: this is a bug; please report it", file=sys.stderr)
    return EXIT_SETUP


def _mcp(args) -> int:
    if args.http is not None:
        from isolate.integrations.hostport import parse_hostport

        try:
            parse_hostport(args.http)
        except ValueError as e:
            print(f"isolate: {e}", file=sys.stderr)
            return EXIT_USAGE
    if not (args.idle_timeout > 0 and args.idle_timeout < float("inf")):
        print(f"isolate: --idle-timeout: expected a number of seconds > 0, got {args.idle_timeout}", file=sys.stderr)
        return EXIT_USAGE
    if args.workspace is not None and not os.path.isdir(args.workspace):
        print(f"isolate: --workspace: not a directory: {args.workspace!r}", file=sys.stderr)
        return EXIT_USAGE
    try:
        from isolate.integrations import mcp_server
    except ImportError as e:
        print(f"isolate: mcp: the MCP SDK is not installed ({e}); pip install 'isolate-sandbox[mcp]'", file=sys.stderr)
        return EXIT_USAGE
    import isolate

    isolate.load_profile(args.profile)   # a bad profile: exit 2 before serving
    mcp_server.serve(args.profile, workspace=os.path.abspath(args.workspace or os.getcwd()),
                     overrides=args.overrides, http=args.http, idle_timeout=args.idle_timeout)
    return 0


def _fuzz(args) -> int:
    from isolate import fuzz
    from isolate.fuzz import progress

    if args.fuzz_command == "engines":
        print("\n".join(fuzz.engines_report()))
        return 0
    if args.fuzz_command != "run":
        print("isolate: fuzz: expected a command: run, triage or engines (isolate fuzz --help)", file=sys.stderr)
        return EXIT_USAGE
    kw = dict(engine=args.engine, corpus=args.corpus, out=args.out, jobs=args.jobs, time_s=args.time,
              timeout_s=args.timeout, rss_limit_mb=args.rss_limit_mb)
    try:
        fuzz.check_inputs(args.target, args.target_args, **kw)
    except fuzz.EngineError as e:
        print(f"isolate: fuzz run: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.json or not sys.stderr.isatty():
        view = progress.JsonLines() if args.json else None
        summary = fuzz.run_fuzz(args.target, args.target_args, on_update=view.update if view else lambda j: None,
                                **kw)
        if view:
            view.finish(summary)
    else:
        with progress.RichTable(args.jobs, args.engine) as view:
            summary = fuzz.run_fuzz(args.target, args.target_args, on_update=view.update, **kw)
    if not args.json:
        summary["out"] = args.out
        print("\n".join(progress.summary_lines(summary)), file=sys.stderr)
    return 0


def _run(args) -> int:
    holder: list = []
    try:
        return _run_prepared(args, holder)
    finally:
        for net in holder:  # network.mode = "allowlist": its proxy, and what it refused
            net.close()
            for v in net.recorded():
                where = v.get("name") or v.get("host") or "?"
                port = f":{v['port']}" if v.get("port") else ""
                print(f"isolate: network: refused {v['proto']} {where}{port}: {v['reason']}", file=sys.stderr)


def _run_prepared(args, holder: list) -> int:
    import isolate
    from isolate import netproxy
    from isolate.launch import plancache, process

    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        print("isolate: run: no command given (isolate run -p PROFILE -- COMMAND [ARG...])", file=sys.stderr)
        return EXIT_USAGE
    if args.timeout is not None and not (0 <= args.timeout < float("inf")):  # negative, nan, inf
        print(f"isolate: -t/--timeout: expected a finite number of seconds >= 0, got {args.timeout}", file=sys.stderr)
        return EXIT_USAGE
    env = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            print(f"isolate: --env: expected NAME=VALUE, got {item!r}", file=sys.stderr)
            return EXIT_USAGE
        env[name] = value
    overrides = list(args.overrides) + (["fds.pty=true"] if args.pty else [])
    pty_size = None
    try:
        launch_profile, launch_overrides, net = netproxy.prepare(args.profile, overrides)
        holder += [net] if net else []
        plan = process.plan_for_cwd(launch_profile, launch_overrides, args.cwd)
        if plan.pty:
            from isolate.launch import terminal

            pty_size = terminal.caller_size()
        # --env adds to the profile's environment (Popen's env= is the whole environment).
        p = isolate.Popen(argv, profile=plan, cwd=args.cwd, env=plan.environment(extra=env) if env else None,
                          pty_size=pty_size, network=net)
    except isolate.SandboxSetupError as e:
        if args.cwd is None or e.step != "chdir":
            raise
        # -C names a directory that is not there (or is not one): that is bad usage.
        print(f"isolate: -C/--cwd: {args.cwd}: {e.strerror}", file=sys.stderr)
        return EXIT_USAGE
    if net is None:
        # For the next run: the native `isolate` launches this plan without Python (cli-fast-path.md).
        plancache.store(args.profile, overrides, args.cwd, process.load_profile(args.profile, overrides), plan,
                        sys.argv[0])
    if args.timing:
        for name, ms in p.timings.items():
            print(f"isolate: timing: {name:>14} {ms:8.3f} ms", file=sys.stderr)
    # Our signals go to the sandbox, whose pid 1 hands them to the program. (With a
    # terminal of its own, a resize reaches it as a resize of that terminal instead.)
    for sig in _FORWARDED:
        if not (plan.pty and sig == signal.SIGWINCH):
            signal.signal(sig, lambda s, _f: p.send_signal(s))
    try:
        if plan.pty:
            try:
                terminal.relay(p, timeout=args.timeout)
            finally:
                p.close_pty()
        p.wait(timeout=args.timeout)
    except isolate.TimeoutExpired:
        p.kill()
        p.wait()
        print(f"isolate: timed out after {args.timeout} s; the sandbox was killed", file=sys.stderr)
        return 124
    if p.oom:
        print(f"isolate: the sandbox ran out of memory (cgroup.memory_max = {p.plan.cgroup.get('memory_max')})",
              file=sys.stderr)
        return 137
    rc = p.returncode
    return 128 - rc if rc < 0 else rc


def _explain(args) -> int:
    from isolate import doctor, errors, netproxy
    from isolate.kernel import constants
    from isolate.launch import net, plans, process
    from isolate.plan import compile as compile_mod
    from isolate.plan import seccomp

    profile = process.load_profile(args.profile, args.overrides)
    data = compile_mod.plain(profile.data)
    # The preflight of `run`: compiling checks the plan against this kernel and caller
    # (doctor.check, cgroup availability, rlimits.nofile); what it refuses, explain
    # refuses the same way (exit 2 for a ProfileError, 125 for UnsupportedError).
    try:
        plan = plans.compile_profile(netproxy.stand_in(profile))  # network.mode "allowlist": see docs/network.md
        doctor.check(plan)
    except errors.UnsupportedError:
        # Say how this caller's launch would be enforced, and why it is refused.
        if not args.json:
            _explain_enforcement(profile)
            sys.stdout.flush()
        raise
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    print(f"# profile {profile.name}  (hash {profile.hash[:16]})")
    print("# files: " + " -> ".join(str(f) for f in profile.files))
    print("\n## resolved profile")
    print(json.dumps(data, indent=2, sort_keys=True))
    _explain_enforcement(profile)
    print("\n## plan")
    flags = [n for n, f in constants.NAMESPACE_FLAGS.items() if plan.clone_flags & f]
    print(f"namespaces: {', '.join(flags) or 'none'}")
    print(f"pid 1 in the sandbox: {'isolate-init' if plan.use_init else 'the program itself'}")
    if plan.host_ids:
        from isolate.launch import hostids

        last = hostids.BASE + hostids.COUNT - 1
        print(f"uid_map: '{plan.inside_uid} S 1'  gid_map: '{plan.inside_gid} S 1'  (S: a host uid/gid of the "
              f"sandbox's own, {hostids.BASE}..{last}, allocated per launch; binds idmapped to it)")
    else:
        print(f"uid_map: {plan.uid_map!r}  gid_map: {plan.gid_map!r}")
        if os.geteuid() == 0 and plan.clone_flags & constants.CLONE_NEWUSER and plan.uid_map \
                and plan.uid_map.split()[1:2] == ["0"]:
            print("  (the caller's host root is mapped in: the profile's own identity.uid_map says so)")
    print(f"inside: uid {plan.inside_uid} gid {plan.inside_gid}  hostname: {plan.hostname!r}")
    print("rlimits: " + (", ".join(f"{constants.RLIMIT_NAMES[r]}={s}/{h}" for r, s, h in plan.rlimits) or "inherited"))
    print(f"capabilities kept: {', '.join(plan.keep_caps) or 'none'}")
    pool = ""
    if plan.netns_pool:  # only root keeps a pool (net.pool() is None for anyone else)
        pool = (" (from the pool of prepared namespaces)" if net.pool() is not None else
                " (a new namespace for each launch: the pool of prepared ones needs root)")
    print(f"network: {plan.network_mode}{pool}")
    print(f"filesystem enforced by: {plan.enforcement}"
          + (f" ({len(plan.landlock_rules)} Landlock rules)" if plan.landlock_rules else ""))
    limits = ", ".join(f"{k}={v}" for k, v in dict(plan.cgroup or {}).items())
    fallback = ("; no usable cgroup here: enforced per process as RLIMIT_AS/RLIMIT_NPROC, not for the whole "
                "sandbox" if plan.cgroup_mode == "rlimits" else "")
    print(f"cgroup: {plan.cgroup_mode or 'none'}" + (f" ({limits}{fallback})" if limits else ""))
    print(f"cwd: {plan.cwd}")
    env = plan.environment()
    print("environment: " + (" ".join(f"{k}={v}" for k, v in sorted(env.items())) or "(empty)"))
    if plan.mount_ops:
        print("mount operations:")
        idmap = {i: why for i, _src, why in plan.idmap_binds}
        for i, op in enumerate(plan.mount_ops):
            note = ""
            if i in idmap:
                note = ("  [idmapped: root's files appear as the sandbox's, its files land owned by root]"
                        if not idmap[i] else f"  [plain bind, files appear as nobody: this filesystem refuses "
                                             f"idmapping ({idmap[i]})]")
            print(f"  {i:3d} {op.describe()}{note}")
    print(f"\n## seccomp filter ({len(plan.bpf or b'') // 8} BPF instructions)")
    print(seccomp.describe(dict(compile_mod.plain(profile.data["seccomp"]))))
    return 0


def _explain_enforcement(profile) -> None:
    """How the filesystem view is enforced for this caller; under Landlock, field by field."""
    from isolate.plan import compile as compile_mod

    mode, fields = compile_mod.enforcement(profile)
    print("\n## enforcement")
    why = {
        "namespaces": "a mount namespace with the profile's view",
        "both": "a mount namespace with the profile's view, and Landlock rules on the same entries",
        "landlock": "Landlock rules on the host's tree (in the namespaces the profile asks for)",
        "landlock-only": 'Landlock alone: enforce = "either" and this caller cannot create user namespaces, '
                         "so the program gets no namespace at all",
    }[mode]
    print(f"for uid {os.geteuid()}: {mode}: {why}")
    if fields:
        width = max(len(f) for f, _, _ in fields)
        for field, verdict, how in fields:
            print(f"  {field:{width}}  {verdict:11}  {how}")
        refused = [f for f, v, _ in fields if v == "refused"]
        if refused:
            print(f"the launch is refused (fail closed): {', '.join(refused)}")


def _profiles() -> int:
    from isolate import profile as profile_mod

    for name in profile_mod.shipped_profiles():
        path = profile_mod.resolve_name(name)
        first = ""
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith("#"):
                        first = line.lstrip("# ").strip()
                        break
        except OSError:
            pass
        print(f"{name:12} {first}")
    return 0


def entry() -> None:
    sys.exit(main())

def _fuzz_triage(args) -> int:
    from isolate.fuzz import triage

    try:
        crashes = triage.triage(args.target, [], args.files, args.out, engine=args.engine, runs=args.runs,
                                timeout=args.timeout, rss_limit_mb=args.rss_limit_mb, profile=args.profile,
                                minimize=args.minimize, replayer=args.replayer)
    except triage.TriageError as e:
        print(f"isolate: fuzz triage: {e}", file=sys.stderr)
        return EXIT_USAGE
    summary = triage.write_summary(args.out, crashes, {})
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    for c in crashes:
        state = " / ".join(c["state"].split("\n")[1:]) or "-"
        flags = ("known" if c["known"] else "new") + ("" if c["reproducible"] else ", UNREPRODUCIBLE")
        print(f"{c['state_id']}  {c['type']:<32} {c['security'] or '-':<6} {c['reproduced']}/{c['runs']}  "
              f"{state}  [{flags}; {len(c['inputs'])} input(s)]")
    print(f"{len(crashes)} crash state(s), {sum(not c['known'] for c in crashes)} new; "
          f"{os.path.join(args.out, 'summary.json')}")
    return 0


if __name__ == "__main__":
    entry()

