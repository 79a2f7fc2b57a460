"""``prunebench profiles list|show|check|init``: the hardware profiles and whether they fit here."""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import re
import sys
from pathlib import Path

from prunebench.harness.errors import ProfileError

_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # the profile schema's name rule


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Sub-subcommands list/show/check/init."""
    sub = p.add_subparsers(dest="profiles_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="every discoverable profile, and whether it fits here")
    ls.add_argument("--json", action="store_true", help="print one JSON object")
    show = sub.add_parser("show", help="a profile's resolved settings")
    show.add_argument("profile", help="profile name or path to a .toml file")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    check = sub.add_parser("check", help="validate a profile and probe threads, CUDA and meters")
    check.add_argument("profile", help="profile name or path to a .toml file")
    check.add_argument("--force", action="store_true",
                       help="accept a fingerprint mismatch (as `measure --force` would)")
    init = sub.add_parser("init", help="write a profile for this machine (detected fingerprint)")
    init.add_argument("name", help="profile name, or a path ending in .toml")
    init.add_argument("--dir", type=Path, default=None,
                      help="folder to write into (default: first $PRUNEBENCH_PROFILES folder, "
                           "else the built-in hw_profiles/)")
    init.add_argument("--device", default="cpu", help="cpu or cuda:N (default cpu)")
    init.add_argument("--threads", default="1", help='intra-op threads, or "all" (default 1)')
    init.add_argument("--batch-sizes", default="1", help="comma-separated, e.g. 1,32")
    init.add_argument("--overwrite", action="store_true", help="replace an existing file")


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen action."""
    return {"list": _list, "show": _show, "check": _check, "init": _init}[
        args.profiles_command](args)


def _list(args: argparse.Namespace) -> int:
    from prunebench.harness.profiles import (
        cuda_usable,
        fingerprint_matches,
        list_profiles,
        load_profile,
    )

    rows = []
    for name, path in list_profiles().items():
        try:
            p = load_profile(path)
        except ProfileError as exc:
            rows.append({"name": name, "device": "?", "available": "no", "fingerprint": "-",
                         "path": str(path), "error": str(exc)})
            continue
        available = not p.is_cuda or cuda_usable(p.device)
        rows.append({"name": name, "device": p.device, "threads": p.threads,
                     "batch_sizes": list(p.batch_sizes), "dtype": p.dtype,
                     "available": "yes" if available else "no",
                     "fingerprint": "match" if not fingerprint_matches(p) else "mismatch",
                     "path": str(path)})
    if args.json:
        print(json.dumps({"profiles": rows}))
        return 0
    cols = ["name", "device", "threads", "batch_sizes", "dtype", "available", "fingerprint"]
    table = [[str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) if table else len(c)
              for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)))
    for r in rows:
        if "error" in r:
            print(f"invalid: {r['error']}", file=sys.stderr)
    return 0


def _profile_dict(profile: object) -> dict:
    data = dataclasses.asdict(profile)  # type: ignore[call-overload]
    data["path"] = str(data["path"]) if data["path"] else None
    data["batch_sizes"] = list(data["batch_sizes"])
    return data


def _show(args: argparse.Namespace) -> int:
    from prunebench.harness.profiles import load_profile

    p = load_profile(args.profile)
    data = _profile_dict(p)
    if args.json:
        print(json.dumps(data))
        return 0
    for key, value in data.items():
        if isinstance(value, dict):
            print(f"[{key}]")
            for k, v in value.items():
                print(f"  {k} = {v!r}")
        else:
            print(f"{key} = {value!r}")
    return 0


def _check(args: argparse.Namespace) -> int:
    import torch

    from prunebench.harness.measure.energy import open_meter
    from prunebench.harness.profiles import applied, check_usable, cuda_usable, load_profile

    p = load_profile(args.profile)
    print(f"ok     {p.path}: valid profile {p.name!r} (version {p.version})")
    with applied(p):
        got = torch.get_num_threads()
    want = p.resolved_threads()
    print(f"{'ok' if got == want else 'FAIL':6} threads: set {want}, torch reports {got}")
    if p.is_cuda:
        print(f"{'ok' if cuda_usable(p.device) else 'FAIL':6} device {p.device}: "
              f"{'usable' if cuda_usable(p.device) else 'no usable CUDA device here'}")
    forced = check_usable(p, force=args.force)  # raises (exit 2) when not usable
    print(f"{'forced' if forced else 'ok':6} fingerprint "
          f"{'does not match (accepted with --force)' if forced else 'matches this machine'}")
    meter = open_meter(p)
    note = f" (fell back: {'; '.join(meter.notes)})" if meter.notes else ""
    label = " -- a model, not a measurement" if meter.method == "modelled" else ""
    print(f"ok     energy meter: {p.energy.meter} -> {meter.method}{label}{note}")
    from prunebench.harness.engines import get_engine, usable_engines

    usable = usable_engines(p)
    for engine, reason in usable.items():
        mark = "ok" if reason is None else "-"
        used = " (this profile's engine)" if engine == p.engine else ""
        try:
            version = get_engine(engine).version()
        except ImportError:
            version = "not installed"
        eng = get_engine(engine)
        extra = (f"; channel multiple {eng.preferred_alignment} preferred (--round-to engine); "
                 f"dynamic: {', '.join(eng.dynamic_methods) or 'none'}") if reason is None else ""
        print(f"{mark:6} engine {engine}{used}: {version if reason is None else reason}{extra}")
    if usable[p.engine] is not None:
        raise ProfileError(f"profile {p.name!r}: its engine {p.engine!r} cannot run here "
                           f"({usable[p.engine]}); pick a profile with another engine")
    if got != want:
        raise ProfileError(f"profile {p.name!r}: torch ran with {got} threads instead of {want}; "
                           "check OMP_NUM_THREADS / taskset")
    return 0


def _target(args: argparse.Namespace) -> Path:
    from prunebench.harness.profiles import builtin_profile_dir

    if str(args.name).endswith(".toml"):
        return Path(args.name).expanduser()
    if not _PLAIN_NAME.match(args.name) or ".." in args.name:  # never outside the folder
        raise ProfileError(f"profile name {args.name!r} must be a plain name (letters, digits, "
                           "'.', '_', '-'; no path separators or '..'), e.g. my-box; to write "
                           "elsewhere give --dir DIR or a path ending in .toml")
    folder = args.dir
    if folder is None:
        env = [d for d in os.environ.get("PRUNEBENCH_PROFILES", "").split(os.pathsep) if d]
        folder = Path(env[0]).expanduser() if env else builtin_profile_dir()
    if folder is None:
        raise ProfileError("no folder to write the profile into; pass --dir DIR")
    return Path(folder) / f"{args.name}.toml"


def _toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid TOML basic string


def _init(args: argparse.Namespace) -> int:
    from prunebench.harness.profiles import machine_fingerprint

    path = _target(args)
    if path.exists() and not args.overwrite:
        raise ProfileError(f"profile file {str(path)!r} already exists; pass --overwrite or "
                           "choose another name")
    fp = machine_fingerprint()
    threads = str(args.threads)
    if threads != "all" and not threads.isdigit():
        raise ProfileError(f'--threads {threads!r} is not a number; use e.g. 1, 4 or "all"')
    sizes = [s.strip() for s in str(args.batch_sizes).split(",") if s.strip()]
    if not sizes or not all(s.isdigit() for s in sizes):
        raise ProfileError(f"--batch-sizes {args.batch_sizes!r} is not a comma-separated list of "
                           "integers; use e.g. 1,32")
    text = "\n".join([
        f"# Written by `prunebench profiles init` on {fp.short()}",
        f"name = {_toml_str(path.stem)}", "version = 1",
        f"description = {_toml_str('this machine: ' + fp.short())}",
        f"device = {_toml_str(args.device)}",
        f"threads = {_toml_str('all') if threads == 'all' else threads}",
        f"batch_sizes = [{', '.join(sizes)}]", 'dtype = "float32"',
        'memory_format = "contiguous"',
        'engine = "eager"   # or torchscript, compile, onnxruntime, openvino (how it is timed)',
        "", "[timing]", "warmup_iters = 20",
        "min_samples = 30", "min_time_s = 0.3", "max_time_s = 3.0", "target_rel_ci = 0.01", "",
        "[energy]", 'meter = "auto"', "watts_per_busy_core = 7.0", "idle_watts = 40.0",
        'source = "placeholder figures for the modelled meter; replace with your CPU\'s"', "",
        "[fingerprint]", f"cpu_model = {_toml_str(glob.escape(fp.cpu_model))}",
        f"gpu_name = {_toml_str(glob.escape(fp.gpu_name) if fp.gpu_name else '*')}", ""])
    from prunebench.search.runs.files import check_out_dir, write_atomic

    check_out_dir(path.parent, "--dir" if args.dir is not None else "profile folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text, check=lambda tmp: _validate_written(tmp, path))
    print(f"wrote {path}")
    return 0


def _validate_written(tmp: Path, final: Path) -> None:
    """Validate the text as if it were at ``final`` (the name must equal the file stem)."""
    from prunebench.harness.profile_schema import parse_profile, read_toml

    parse_profile(read_toml(tmp), final)


NAME = "profiles"
HELP = "list, show, check or create hardware profiles (hw_profiles/*.toml)"
