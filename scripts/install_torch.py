"""Install the pinned torch into the running Python: the CPU build where there is no NVIDIA GPU.

PyPI's torch for Linux is the CUDA build, which pulls about twenty nvidia-* wheels (several GB) that
a machine without an NVIDIA GPU never uses. So, unless told otherwise (``--build``):

* an NVIDIA GPU (``nvidia-smi`` on the PATH, or ``/proc/driver/nvidia``): torch from the configured
  index (pip's own settings; on PyPI, the CUDA build);
* no NVIDIA GPU: torch from PyTorch's CPU wheel index, when a quick probe (a few seconds at most)
  reaches it; otherwise, or when pip fails there, from the configured index as above.

``--index-url`` (the Makefile's ``TORCH_INDEX``) names the index outright, e.g. a CUDA-version build.
Run by ``make`` (``make setup``, ``make demo``, ``make test``) with the venv's Python; standard library
only, since it runs before anything is installed. ``--dry-run`` prints the decision and the pip
commands without running them. docs/install.md has the details.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
#: Seconds the probe of the CPU index may take, name resolution included.
PROBE_SECONDS = 5.0
BUILDS = ("auto", "cpu", "cuda")


def nvidia_gpu(path: str | None = None, driver: Path = Path("/proc/driver/nvidia")) -> bool:
    """Whether this machine has an NVIDIA GPU: its driver's ``nvidia-smi`` on ``path`` (default: $PATH)
    or the driver's ``/proc`` entry."""
    return shutil.which("nvidia-smi", path=path) is not None or driver.exists()


def reachable(url: str, seconds: float = PROBE_SECONDS) -> bool:
    """Whether ``url`` answers within ``seconds``, however slow name resolution is (a proxy set in the
    environment is used, as pip would)."""
    answered: list[bool] = []

    def probe() -> None:
        try:
            with urllib.request.urlopen(url, timeout=seconds):
                answered.append(True)
        except (OSError, ValueError):  # URLError, HTTPError, timeouts, a malformed URL
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(seconds)
    return bool(answered)


@dataclass
class Plan:
    """What to install from where, and why (printed for the user)."""

    reason: str
    attempts: list[list[str]]      # pip argument lists, tried in turn until one succeeds


def installed_torch() -> str | None:
    """The installed torch's version (e.g. ``2.13.0+cpu``), None without one."""
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def plan(version: str, build: str, gpu: bool, cpu_index_reachable: Callable[[], bool], cpu_index: str = CPU_INDEX,
         installed: str | None = None, index: str | None = None) -> Plan:
    """The pip commands for torch ``version``: ``build`` auto follows ``gpu``; ``index`` (a wheel index
    such as PyTorch's .../whl/cu126) overrides the build; ``cpu_index_reachable`` is asked only when
    the CPU build is wanted and not installed already."""
    pin = f"torch=={version}"
    same_version = installed is not None and installed.split("+")[0] == version
    # a build of the same version satisfies the pin: replacing it by another build needs force
    force = ["--force-reinstall"] if same_version else []
    if index:
        label = index.rstrip("/").rsplit("/", 1)[-1]  # PyTorch's indexes name the local version: cpu, cu126 ...
        if same_version and str(installed).endswith(f"+{label}"):
            return Plan(f"torch {installed} is installed already", [])
        return Plan(f"torch from {index}", [["install", *force, "--index-url", index, pin]])
    if build == "auto":
        build, reason = ("cuda", "an NVIDIA GPU was found") if gpu else ("cpu", "no NVIDIA GPU was found")
    else:
        reason = f"the {build} build was asked for"
    if same_version and (build == "cpu" or "+cpu" not in str(installed)):
        return Plan(f"torch {installed} is installed already", [])
    configured = ["install", *force, pin]
    if build == "cuda":
        return Plan(reason + ": torch from the configured index (on PyPI, the CUDA build)", [configured])
    if not cpu_index_reachable():
        return Plan(reason + f", but {cpu_index} cannot be reached: torch from the configured index instead "
                             "(pip's settings; PyPI's torch for Linux is the CUDA build, a few GB)", [configured])
    return Plan(reason + f": the CPU build from {cpu_index}", [["install", "--index-url", cpu_index, pin], configured])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                     epilog="The Makefile's TORCH_VERSION, TORCH_BUILD and TORCH_INDEX set these.")
    parser.add_argument("--torch-version", required=True, metavar="VERSION", help="the torch release, e.g. 2.13.0")
    parser.add_argument("--build", choices=BUILDS, default="auto",
                        help="auto (default): cpu without an NVIDIA GPU, else cuda; cpu: PyTorch's CPU wheels "
                             "when reachable, else the configured index; cuda: the configured index")
    parser.add_argument("--cpu-index", default=CPU_INDEX, metavar="URL",
                        help="the CPU wheel index (default %(default)s)")
    parser.add_argument("--index-url", default=None, metavar="URL",
                        help="install torch from this wheel index, e.g. https://download.pytorch.org/whl/cu126 for "
                             "the CUDA 12.6 build (overrides --build)")
    parser.add_argument("--dry-run", action="store_true", help="print the decision and the pip commands only")
    args = parser.parse_args(argv)
    decided = plan(args.torch_version, args.build, nvidia_gpu(),
                   lambda: reachable(args.cpu_index.rstrip("/") + "/torch/"), args.cpu_index, installed_torch(),
                   args.index_url)
    print(f"install-torch: {decided.reason}", flush=True)
    for i, pip_args in enumerate(decided.attempts):
        command = [sys.executable, "-m", "pip", *pip_args]
        print("install-torch: " + " ".join(command), flush=True)
        if args.dry_run:
            continue
        if subprocess.run(command).returncode == 0:
            return 0
        if i + 1 < len(decided.attempts):
            print("install-torch: that failed; trying the configured index", flush=True)
    return 1 if decided.attempts and not args.dry_run else 0


if __name__ == "__main__":
    sys.exit(main())
