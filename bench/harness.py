"""What every bench in ``bench/`` shares: measuring one variant in a fresh child process
(wall time inside the child, so interpreter start-up is left out, and peak RSS as the
child's own VmHWM, never ``ru_maxrss`` after a fork), interleaving the variants across
repetitions, and printing median and min wall, peak RSS and the ratio as the last line.

A bench script calls :func:`child_main` first thing in ``main()``: when it was started as
a child (``--child NAME ...``) that runs the variant and exits. The parent then calls
:func:`measure` per variant and repetition (in :func:`interleaved` order) and
:func:`report` at the end.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

MARK = "BENCH-SAMPLE "


@dataclass(frozen=True)
class Sample:
    """One run of one variant: seconds of wall time and the child's peak RSS in MiB."""

    wall: float
    peak_mib: float


def peak_rss_mib() -> float:
    """This process's high-water resident set (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child_main(variants: Mapping[str, Callable[[list[str]], None]]) -> None:
    """When started as ``script --child NAME ARGS...``: time ``variants[NAME](ARGS)``, print
    the sample on one marked line and exit. Otherwise return at once."""
    if len(sys.argv) < 3 or sys.argv[1] != "--child":
        return
    run = variants[sys.argv[2]]
    started = time.perf_counter()
    run(sys.argv[3:])
    wall = time.perf_counter() - started
    print(MARK + json.dumps({"wall": wall, "peak_mib": peak_rss_mib()}), flush=True)
    sys.exit(0)


def measure(
    script: str, name: str, args: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> Sample:
    """Run variant ``name`` of ``script`` in a fresh interpreter (with ``env``, if given)
    and return its sample."""
    done = subprocess.run(
        [sys.executable, script, "--child", name, *args],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(MARK):
            figures = json.loads(line[len(MARK) :])
            return Sample(wall=figures["wall"], peak_mib=figures["peak_mib"])
    raise RuntimeError(f"{name}: the child printed no sample")


def interleaved(names: Sequence[str], repeat: int) -> Iterator[tuple[int, str]]:
    """(repetition, name) pairs, the order rotated each repetition so that drift in the
    machine's load falls on every variant alike."""
    for rep in range(repeat):
        shift = rep % len(names)
        for name in [*names[shift:], *names[:shift]]:
            yield rep, name


def median_wall(samples: Sequence[Sample]) -> float:
    return statistics.median(sample.wall for sample in samples)


def report(
    samples: Mapping[str, Sequence[Sample]],
    measured: str,
    anchor: str,
    goal: str,
    ratio: Callable[[Mapping[str, float]], float] | None = None,
) -> float:
    """Print one line per variant (median and min wall, peak RSS) and, last, the ratio
    of ``measured`` to ``anchor`` by median wall (or ``ratio`` of the medians), with the
    goal it is held to. Returns the ratio."""
    print(f"{'variant':<28}{'median s':>10}{'min s':>10}{'peak MiB':>10}  runs")
    medians = {}
    for name, runs in samples.items():
        medians[name] = median_wall(runs)
        least = min(sample.wall for sample in runs)
        peak = max(sample.peak_mib for sample in runs)
        print(f"{name:<28}{medians[name]:>10.3f}{least:>10.3f}{peak:>10.1f}  {len(runs)}")
    value = ratio(medians) if ratio else medians[measured] / medians[anchor]
    print(f"ratio {measured} / {anchor} = {value:.2f}x (goal {goal})")
    return value
