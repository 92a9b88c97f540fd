"""A real ``tritonserver`` started on this machine: the development and test server, and an option for CPU hosts.

Production GPU servers run NVIDIA's container (or the JetPack release) on the same model repository; here the
binary comes from the ``nvidia-pytriton`` wheel, which bundles tritonserver 2.51 with only the Python backend.
Its Python-backend stub embeds libpython and takes its prefix and site-packages from the first ``python3`` on
``PATH``, so the server is started with this interpreter's ``bin`` first on ``PATH`` and its ``LIBDIR`` first on
``LD_LIBRARY_PATH`` (../shared/TRITON.md): the defense models then import this pcedge. A stub that cannot find
libpython makes the server hang rather than fail, so the stub's libraries are checked with ``ldd`` first.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError, EngineError, MissingDependencyError

log = logging.getLogger("pcedge.serve")

SHM_BYTES = 64 << 20
SERVER_PYTHON_HINT = ("python3 -m venv srv && srv/bin/pip install 'numpy<2' onnxruntime patchcleanser-edge, then "
                      "pcedge triton serve --python srv/bin/python")
INSTALL_HINT = ("pip install nvidia-pytriton==0.7.0 --no-deps (a tritonserver with the Python backend; its numpy<2 pin "
                "is only for PyTriton's own API, which pcedge does not use), or run NVIDIA's tritonserver container")


@dataclass(frozen=True)
class ServerInstall:
    """Where a tritonserver binary and its Python backend live."""

    binary: Path
    backends: Path  # a folder holding python/libtriton_python.so
    stub: Path | None  # the Python-backend stub for this interpreter (None: the backend's own stub is used)
    libraries: tuple[Path, ...]  # extra LD_LIBRARY_PATH entries
    caches: Path | None


@dataclass(frozen=True)
class ServerPython:
    """The interpreter the Python-backend models run in (it must have pcedge, onnxruntime and numpy<2)."""

    executable: Path
    version: str  # "3.11"
    libdir: str  # where its libpython lives (first on LD_LIBRARY_PATH, ../shared/TRITON.md)


PROBE = ("import sys, sysconfig, json; import numpy; import pcedge.serve.defense_model; "
         "print(json.dumps([f'{sys.version_info.major}.{sys.version_info.minor}', sysconfig.get_config_var('LIBDIR') or '', "
         "numpy.__version__]))")


def server_python(executable: str | Path | None = None) -> ServerPython:
    """Check the server's Python: pcedge importable, and numpy 1.x. Triton 2.51's Python backend is built with a
    pybind11 older than numpy 2's ABI: with numpy 2 every tensor a model creates reaches Triton as 0 bytes
    (measured: "input byte size mismatch ... got 0"), so such a Python is refused here, not at the first request."""
    exe = Path(executable or sys.executable)
    try:
        out = subprocess.run([str(exe), "-c", PROBE], capture_output=True, text=True, timeout=120)
    except OSError as exc:
        raise ConfigError(f"cannot run the server's Python {exe}: {exc}") from None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError(f"the server's Python {exe} cannot import pcedge's defense model ({last}): install pcedge and "
                          f"onnxruntime there ({SERVER_PYTHON_HINT})")
    version, libdir, numpy_version = json.loads(out.stdout.strip().splitlines()[-1])
    if int(numpy_version.split(".")[0]) >= 2:
        raise ConfigError(f"the server's Python {exe} has numpy {numpy_version}; Triton 2.51's Python backend passes numpy 2 "
                          f"arrays as empty tensors. Give the server a Python with numpy<2 ({SERVER_PYTHON_HINT})")
    return ServerPython(exe, version, libdir)


def find_server(python_version: str) -> ServerInstall:
    """The pip wheel's server (with the stub for ``python_version``), else a ``tritonserver`` on PATH (NVIDIA's container)."""
    found = importlib.util.find_spec("pytriton")  # located, not imported: PyTriton's own API needs numpy<2
    if found is not None and found.origin:
        root = Path(found.origin).parent / "tritonserver"
        stub = root / "python_backend_stubs" / python_version / "triton_python_backend_stub"
        if not stub.is_file():
            raise MissingDependencyError(f"nvidia-pytriton has no Python-backend stub for Python {python_version} ({stub})")
        libs = root.parent.parent / "nvidia_pytriton.libs"
        return ServerInstall(root / "bin" / "tritonserver", root / "backends", stub, (libs,), root / "caches")
    binary = shutil.which("tritonserver")
    if binary:
        return ServerInstall(Path(binary), Path("/opt/tritonserver/backends"), None, (), Path("/opt/tritonserver/caches"))
    raise MissingDependencyError(f"no tritonserver found: {INSTALL_HINT}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TritonServer:
    """``tritonserver --model-repository REPO`` as a context manager: started, ready, and stopped on exit.

    Ports default to free ones on loopback (``http_port=8000`` etc. for the usual ones). ``stop()`` sends
    SIGTERM (Triton finishes in-flight requests within ``exit_timeout_s``), then SIGKILL if it must.
    """

    def __init__(self, repository: str | Path, *, http_port: int | None = None, grpc_port: int | None = None,
                 metrics_port: int | None = None, host: str = "127.0.0.1", exit_timeout_s: int = 5,
                 log_file: str | Path | None = None, verbose: bool = False, python: str | Path | None = None,
                 extra_args: Sequence[str] = ()) -> None:
        self.repository = Path(repository).resolve()
        if not (self.repository.is_dir() and any(self.repository.glob("*/config.pbtxt"))):
            raise ConfigError(f"{repository} is not a Triton model repository (no */config.pbtxt): make one with pcedge triton repo")
        self.host = host
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.exit_timeout_s = exit_timeout_s
        self.verbose = verbose
        self.log_file = Path(log_file) if log_file else None
        self.python = python
        self.extra_args = list(extra_args)  # tritonserver's own flags: TLS (--grpc-use-ssl ...), restricted protocols, ...
        self.process: subprocess.Popen | None = None
        self._workdir: tempfile.TemporaryDirectory | None = None
        self._log_handle = None

    # ------------------------------------------------------------------------------- endpoints
    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def model_uri(self, name: str) -> str:
        """What ``--model`` takes to reach ``name`` on this server."""
        return f"triton://{self.grpc_url}/{name}"

    # ------------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> "TritonServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout_s: float = 120.0) -> "TritonServer":
        python = server_python(self.python)
        install = find_server(python.version)
        self._workdir = tempfile.TemporaryDirectory(prefix="pcedge-triton-")
        backends = self._backend_dir(install, python, Path(self._workdir.name))
        args = [str(install.binary), f"--model-repository={self.repository}", f"--backend-directory={backends}",
                f"--http-port={self.http_port}", f"--grpc-port={self.grpc_port}", f"--metrics-port={self.metrics_port}",
                "--allow-metrics=true", f"--exit-timeout-secs={self.exit_timeout_s}", f"--http-address={self.host}",
                f"--grpc-address={self.host}", "--strict-readiness=true", f"--log-verbose={1 if self.verbose else 0}",
                # the Python backend's shared memory starts at 1 MB and grows 1 MB at a time by default; one step's
                # masked images are tens of MB, so grow it in large steps (measured: 85-image BLS calls 1.5x slower)
                f"--backend-config=python,shm-default-byte-size={SHM_BYTES}", f"--backend-config=python,shm-growth-byte-size={SHM_BYTES}"]
        if install.caches and install.caches.is_dir():
            args.append(f"--cache-directory={install.caches}")
        args += self.extra_args
        self._log_handle = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self.process = subprocess.Popen(args, env=self._environment(install, python), stdout=self._log_handle,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready(timeout_s)
        return self

    def restart(self, timeout_s: float = 120.0) -> None:
        """Stop and start again on the same ports (what a server update looks like to the clients)."""
        self.stop()
        self.start(timeout_s)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(self.exit_timeout_s + 10)
            except subprocess.TimeoutExpired:
                log.warning("tritonserver did not stop within %d s of SIGTERM: killing it", self.exit_timeout_s + 10)
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None
        if self._log_handle not in (None, subprocess.DEVNULL):
            self._log_handle.close()
        self._log_handle = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def kill(self) -> None:
        """SIGKILL, as a crash or a power cut would (for fault tests)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.stop()

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    # ------------------------------------------------------------------------------- internals
    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EngineError(f"tritonserver exited with code {self.process.returncode} while starting"
                                  f"{self._log_hint()}: check the repository (pcedge triton repo) and the server log")
            if self.is_ready():
                log.debug("tritonserver ready: %s (HTTP), %s (gRPC)", self.http_url, self.grpc_url)
                return
            time.sleep(0.25)
        self.kill()
        raise EngineError(f"tritonserver was not ready within {timeout_s:.0f} s{self._log_hint()}")

    def _log_hint(self) -> str:
        return f" (log: {self.log_file})" if self.log_file else " (rerun with --log FILE to keep its log)"

    @staticmethod
    def _backend_dir(install: ServerInstall, python: ServerPython, workdir: Path) -> Path:
        """The wheel's Python backend with the stub for this interpreter beside it (what PyTriton does)."""
        if install.stub is None:
            return install.backends
        target = workdir / "backends" / "python"
        target.mkdir(parents=True)
        for item in (install.backends / "python").iterdir():
            if item.is_file():
                shutil.copy2(item, target / item.name)
        shutil.copy2(install.stub, target / "triton_python_backend_stub")
        missing = _missing_libraries(target / "triton_python_backend_stub", TritonServer._library_path(install, python))
        if missing:
            raise MissingDependencyError(f"the Python-backend stub cannot find {', '.join(missing)} (the server would hang, "
                                         "not fail): use a Python with a shared libpython (python3 -m venv from Debian's python3)")
        return target.parent

    @staticmethod
    def _library_path(install: ServerInstall, python: ServerPython) -> str:
        # the server Python's libpython first (../shared/TRITON.md)
        parts = [python.libdir, *map(str, install.libraries), os.environ.get("LD_LIBRARY_PATH", "")]
        return os.pathsep.join(p for p in parts if p)

    @staticmethod
    def _environment(install: ServerInstall, python: ServerPython) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PYTHONHOME", None)
        env["PATH"] = os.pathsep.join([str(python.executable.parent), env.get("PATH", "")])  # the stub's python3
        env["LD_LIBRARY_PATH"] = TritonServer._library_path(install, python)
        return env


def _missing_libraries(binary: Path, library_path: str) -> list[str]:
    try:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30,
                             env={**os.environ, "LD_LIBRARY_PATH": library_path}).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []  # no ldd: start and let the readiness timeout speak
    return [line.split()[0] for line in out.splitlines() if "not found" in line]
