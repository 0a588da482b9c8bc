"""scripts/install_torch.py, which make runs before anything else: the torch build and the index it comes from."""

from __future__ import annotations

import http.server
import importlib.util
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install_torch.py"
_spec = importlib.util.spec_from_file_location("install_torch", SCRIPT)
assert _spec is not None and _spec.loader is not None
install_torch = importlib.util.module_from_spec(_spec)
sys.modules["install_torch"] = install_torch  # dataclasses look their module up by name
_spec.loader.exec_module(install_torch)


def never() -> bool:
    raise AssertionError("the CPU index was probed where it is not needed")


@pytest.fixture
def fake_nvidia_smi(tmp_path) -> str:
    """A PATH whose only program is a stand-in ``nvidia-smi``."""
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\nexit 0\n")
    smi.chmod(0o755)
    return str(smi.parent)


def test_gpu_probe(tmp_path, fake_nvidia_smi):
    no_driver = tmp_path / "no-driver"
    assert install_torch.nvidia_gpu(fake_nvidia_smi, no_driver)
    assert not install_torch.nvidia_gpu(str(tmp_path), no_driver)
    (tmp_path / "driver").mkdir()
    assert install_torch.nvidia_gpu(str(tmp_path), tmp_path / "driver")  # a driver without nvidia-smi


def test_probe_gives_up_on_a_silent_index():
    """A server that never answers (a dead proxy, a firewall that drops packets) costs the probe's limit, no more."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # connections queue up and are never answered
    try:
        start = time.perf_counter()
        assert not install_torch.reachable(f"http://127.0.0.1:{silent.getsockname()[1]}/whl/cpu/torch/", 0.5)
        assert time.perf_counter() - start < 3
    finally:
        silent.close()


def test_plans():
    plan = install_torch.plan
    cpu_first = [["install", "--index-url", install_torch.CPU_INDEX, "torch==2.13.0"], ["install", "torch==2.13.0"]]
    assert plan("2.13.0", "auto", False, lambda: True).attempts == cpu_first
    assert plan("2.13.0", "cpu", True, lambda: True).attempts == cpu_first
    # the CPU index out of reach: the configured index at once
    assert plan("2.13.0", "auto", False, lambda: False).attempts == [["install", "torch==2.13.0"]]
    # a GPU, or the CUDA build asked for: the configured index, no probe
    assert plan("2.13.0", "auto", True, never).attempts == [["install", "torch==2.13.0"]]
    assert plan("2.13.0", "cuda", False, never).attempts == [["install", "torch==2.13.0"]]
    # an installed torch of that version and build is kept; a CPU build is replaced where CUDA is wanted
    assert plan("2.13.0", "auto", False, never, installed="2.13.0+cpu").attempts == []
    assert plan("2.13.0", "auto", True, never, installed="2.13.0").attempts == []
    assert plan("2.13.0", "cuda", False, never, installed="2.13.0+cpu").attempts == [
        ["install", "--force-reinstall", "torch==2.13.0"]]
    assert plan("2.13.0", "auto", False, lambda: False, installed="2.12.0+cpu").attempts == [
        ["install", "torch==2.13.0"]]
    # an index named outright: no GPU probe matters, no CPU-index probe
    cu126 = "https://download.pytorch.org/whl/cu126"
    assert plan("2.13.0", "cpu", False, never, index=cu126).attempts == [
        ["install", "--index-url", cu126, "torch==2.13.0"]]
    assert plan("2.13.0", "auto", False, never, installed="2.13.0+cu126", index=cu126).attempts == []
    assert plan("2.13.0", "auto", False, never, installed="2.13.0+cpu", index=cu126).attempts == [
        ["install", "--force-reinstall", "--index-url", cu126, "torch==2.13.0"]]


def dry_run(*args: str, path: str | None = None) -> tuple[str, float]:
    """(stdout, seconds) of the script's --dry-run for a torch release that is not installed."""
    env = {**os.environ, "PATH": path or os.environ.get("PATH", "")}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(SCRIPT), "--torch-version", "0.0.1", "--dry-run", *args],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout, time.perf_counter() - start


class _Index(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the handler's name)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"<html></html>")

    def log_message(self, *args) -> None:
        pass


def test_dry_run_picks_the_index(fake_nvidia_smi):
    pin = "-m pip install torch==0.0.1"
    out, _ = dry_run(path=fake_nvidia_smi + os.pathsep + os.environ.get("PATH", ""))  # a GPU: configured index
    assert "an NVIDIA GPU was found" in out and out.strip().endswith(pin)
    out, seconds = dry_run("--build", "cpu", "--cpu-index", "http://127.0.0.1:9/whl/cpu")  # nothing listens there
    assert "cannot be reached" in out and out.strip().endswith(pin) and "--index-url" not in out
    assert seconds < 10
    server = http.server.HTTPServer(("127.0.0.1", 0), _Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        index = f"http://127.0.0.1:{server.server_port}/whl/cpu"
        out, _ = dry_run("--build", "cpu", "--cpu-index", index)
    finally:
        server.shutdown()
    assert f"--index-url {index} torch==0.0.1" in out and out.strip().endswith(pin)
