"""Compare the hot path of two commits, alternating them in one run: the way to check any change
to the message layer, the device API, the telemetry services or a store.

    .venv/bin/python benchmarks/ab.py 99fbdee                 # that commit against this checkout
    .venv/bin/python benchmarks/ab.py 99fbdee HEAD --rounds 3 --baseline
    .venv/bin/python benchmarks/ab.py main HEAD --store redis://127.0.0.1:6379/9

Each commit is installed once into its own virtual environment under ``.ab/`` (``git archive`` of
the commit, then ``pip install``); the working tree (``.``, the default second side) runs from this
checkout's own environment.  Every round starts a fresh server of each side on an empty store and
drives it with the same load generator (``benchmarks/loadgen.py``: CON telemetry POSTs, 64 in
flight); the sides alternate A B, B A, A B, ... so neither always runs first.  ``--baseline`` adds
the do-nothing txThings server to every round.  Prints each round, the medians and the ratios;
the server's CPU time per answer moves less than msgs/s when the machine is busy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, ".ab")
WORKING_TREE = "."


def resolve(ref):
    """The full commit id of ``ref``."""
    return subprocess.run(["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()


def twistd_of(ref):
    """The twistd of ``ref``'s own environment, built on first use; this checkout's for ``.``."""
    if ref == WORKING_TREE:
        return os.path.join(bench.BIN, "twistd")
    commit = resolve(ref)
    home = os.path.join(CACHE, commit[:12])
    twistd = os.path.join(home, "venv", "bin", "twistd")
    if os.path.exists(twistd):
        return twistd
    print(f"building {ref} ({commit[:12]}) into {home} (once)", flush=True)
    shutil.rmtree(home, ignore_errors=True)
    source = os.path.join(home, "src")
    os.makedirs(source)
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", source], input=archive, check=True)
    subprocess.run([sys.executable, "-m", "venv", os.path.join(home, "venv")], check=True)
    subprocess.run([os.path.join(home, "venv", "bin", "pip"), "install", "-q", source], check=True)
    return twistd


def one_run(name, twistd, args):
    """Start ``twistd`` on an empty store, measure it, stop it: a loadgen result."""
    with tempfile.TemporaryDirectory() as workdir:
        extra = ["--store", args.store] if args.store else []
        proc, port, _ = bench.start_tbcoap(workdir, extra, twistd=twistd, devices=args.devices)
        try:
            return bench.measure(name, proc, port, args)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


def baseline_run(args):
    with tempfile.TemporaryDirectory() as workdir:
        proc, port = bench.start_baseline(workdir)
        try:
            return bench.measure("txThings", proc, port, args)
        finally:
            proc.kill()
            proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", metavar="REF", help="a commit, branch or tag")
    parser.add_argument("b", metavar="REF2", nargs="?", default=WORKING_TREE,
                        help="another one (default: this working tree, '.')")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measurement (default 10)")
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--ports", type=int, default=256)
    parser.add_argument("--store", help="--store for both sides (default: each its own SQLite file)")
    parser.add_argument("--devices", type=int, default=1,
                        help="requests rotate over this many devices (default 1: one device's points share "
                             "each group commit, as from a fast sender; 1000: each commit's points are of "
                             "different devices)")
    parser.add_argument("--baseline", action="store_true", help="also the do-nothing txThings server, each round")
    args = parser.parse_args()
    args.messages, args.progress = None, False
    sides = {args.a: twistd_of(args.a), args.b: twistd_of(args.b)}
    results = {name: [] for name in sides}
    if args.baseline:
        results["txThings"] = []
    names = list(sides)
    for number in range(args.rounds):
        order = names if number % 2 == 0 else names[::-1]
        for name in order:
            result = one_run(name, sides[name], args)
            results[name].append(result)
            print(f"round {number + 1}  {name:14} {result.rate:8.0f} msgs/s  p50 {result.p50:6.2f} ms  "
                  f"p99 {result.p99:6.2f} ms  CPU {result.cpu_us:5.1f} us/answer  errors {result.errors}  "
                  f"lost {result.lost}", flush=True)
        if args.baseline:
            result = baseline_run(args)
            results["txThings"].append(result)
            print(f"round {number + 1}  {'txThings':14} {result.rate:8.0f} msgs/s  p50 {result.p50:6.2f} ms  "
                  f"p99 {result.p99:6.2f} ms", flush=True)
    print(f"\n{args.rounds} rounds of {args.seconds:g} s, {args.inflight} CON requests in flight, {args.devices} device(s)"
          f"{', store ' + args.store.split('://')[0] if args.store else ', SQLite'}\n")
    medians = {}
    for name, runs in results.items():
        medians[name] = statistics.median(r.rate for r in runs)
        p99 = statistics.median(r.p99 for r in runs)
        cpu = statistics.median(r.cpu_us for r in runs)
        print(f"{name:14} median {medians[name]:8.0f} msgs/s   median p99 {p99:6.2f} ms   "
              f"median CPU {cpu:5.1f} us/answer   runs {' / '.join(f'{r.rate:.0f}' for r in runs)}")
    a, b = names
    print(f"\n{b} / {a}: {medians[b] / medians[a]:.3f}x")
    if args.baseline:
        for name in names:
            print(f"{name} / txThings: {medians[name] / medians['txThings']:.2f}x")


if __name__ == "__main__":
    main()
