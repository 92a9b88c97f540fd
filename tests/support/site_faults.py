"""A site's bad day, on real components: four loopback RTSP cameras and one file in one ``pcedge run``.

With ``faults``: camera A is down at start and comes up ``A_UP_S`` seconds after the launch; camera B's server is killed at
``FAULT_AT_S`` and restarted ``B_DOWN_S`` later; camera C stops sending (SIGSTOP, connection open) at
``FAULT_AT_S`` for ``C_FROZEN_S``; camera D is healthy. A ``served`` run defends through a Triton server
(``triton://``) that is killed at ``FAULT_AT_S`` and restarted. Without faults every camera runs throughout.
The run is the real command in its own process; its JSON-lines log and summary come back parsed, with the
wall-clock times of the faults. Used by tests/video/test_site_faults.py and benchmarks/bm_site_faults.py. A served run's
``served_server`` has ``kill(client)`` (given the running command's process) and ``start()``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tests.support.rtsp import RtspServer

ROOT = Path(__file__).resolve().parents[2]
CAMERAS = ("a", "b", "c", "d")
FAULT_AT_S, A_UP_S, B_DOWN_S, C_FROZEN_S = 8.0, 12.0, 3.0, 10.0  # seconds after the command's launch


@dataclass
class SiteRun:
    """What one scenario run left: exit code, every log record, the summary, when each fault happened."""

    returncode: int
    records: list[dict[str, Any]]
    summary: dict[str, Any]
    started: float  # wall clock when the command was launched
    faults: dict[str, float] = field(default_factory=dict)  # fault name -> wall clock
    stderr: str = ""

    def frames(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("stream_name") == name and "index" in r and "event" not in r]

    def stream(self, name: str) -> dict[str, Any]:
        return next(s for s in self.summary["streams"] if s["stream_name"] == name)

    def rate(self, name: str, start: float, end: float) -> float:
        """Frames of ``name`` defended per second between two wall-clock times (by their decision times)."""
        done = [r["timestamp"] + r["age_ms"] / 1e3 for r in self.frames(name)]
        return sum(start <= t < end for t in done) / (end - start)


def run_site(model: str, clip: Path, out: Path, *, max_frames: int, faults: bool, served_server: Any = None,
             extra_args: tuple[str, ...] = (), timeout_s: float = 240.0) -> SiteRun:
    """Run the scenario (see the module docstring); ``served_server`` stands for the started server of ``model``."""
    out.mkdir(parents=True, exist_ok=True)
    cameras = {name: RtspServer() for name in CAMERAS}
    for name, camera in cameras.items():
        if not (faults and name == "a"):
            camera.start()
    log_path, summary_path = out / "frames.jsonl", out / "summary.json"
    command = [sys.executable, "-m", "pcedge", "run", "--model", model, "--headless", "--max-frames", str(max_frames),
               "--log", str(log_path), "--json", str(summary_path), "--stall-timeout", "2", "--reconnect", "60", "-q"]
    command += [arg for name in CAMERAS for arg in ("--source", f"{name}={cameras[name].url}")]
    command += ["--source", f"file={clip}", *extra_args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    fault_times: dict[str, float] = {}
    started = time.time()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    injector = threading.Thread(target=_inject, args=(cameras, served_server, fault_times, started, proc), daemon=True)
    if faults:
        injector.start()
    try:
        _, stderr = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
        if faults:
            injector.join(timeout=60)
        for camera in cameras.values():
            camera.stop()
    records = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.exists() else []
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return SiteRun(proc.returncode, records, summary, started, fault_times, stderr)


def _inject(cameras: dict[str, RtspServer], server: Any, times: dict[str, float], started: float, proc: subprocess.Popen) -> None:
    """The fault schedule, relative to the command's launch; stops early if the run has ended."""
    def at(seconds: float, name: str, action: Callable[[], Any]) -> None:
        while time.time() < started + seconds:
            if proc.poll() is not None:
                return
            time.sleep(0.05)
        times[name] = time.time()
        action()

    steps = sorted([(FAULT_AT_S, "b_killed", cameras["b"].kill), (FAULT_AT_S, "c_frozen", cameras["c"].freeze),
                    (A_UP_S, "a_up", cameras["a"].start), (FAULT_AT_S + B_DOWN_S, "b_restarted", cameras["b"].start),
                    (FAULT_AT_S + C_FROZEN_S, "c_thawed", cameras["c"].thaw)]
                   + ([(FAULT_AT_S, "server_killed", lambda: server.kill(proc)), (FAULT_AT_S + B_DOWN_S, "server_restarted", server.start)]
                      if server is not None else []), key=lambda step: step[0])
    for seconds, name, action in steps:
        at(seconds, name, action)
