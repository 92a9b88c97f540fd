"""The defense served from Triton to 1, 2, 4 and 8 camera clients, beside the local driver on the same frames.

    python benchmarks/bm_triton.py [--model lite0.onnx] [--clients 1 2 4 8] [--frames 12] [--json triton.json]

One real tritonserver (the nvidia-pytriton wheel's, started here with .venv-triton's numpy<2 Python) serves a
repository made by ``pcedge triton repo --classifier python`` (ONNX Runtime CPU inside the Python backend, the only
backend that wheel has). Each client is a thread with its own gRPC connection and one request in flight, as a
camera sends frames; client c sends its own camera-like 1280x720 views of scikit-image's photos (client 0's carry
a pasted high-contrast patch, so one camera pays for second rounds). Reported per client count: aggregate defended
FPS, per-client p50/p99 latency, the classifier's mean execution batch and the defense's mean frames per execution
(Triton's statistics API, before/after deltas), and decision differences against the local driver on the same
pipeline (client resize, then masking and engine). Beside it, in the same run: the local single-process driver
(``PatchCleanser`` on ONNX Runtime CPU, the raw frames) for p50 latency and saturated FPS, and the bytes one
request puts on the wire (counted by a loopback TCP relay between client and server, gRPC framing included).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SERVER_PYTHON = ROOT / ".venv-triton" / "bin" / "python"
DECISION = ("label", "case", "disagreers", "passing_mask", "level")


def frames_for(clients: int, count: int, model: Path) -> list[list[np.ndarray]]:
    from pcedge.evaluation.bench import camera_frames, pasted_frames
    from pcedge.runtime.driver import PatchCleanser

    views = camera_frames(count * clients)
    with PatchCleanser.from_onnx(model, backend="ort") as pc:
        patched = pasted_frames(views[:count], pc)
    return [patched] + [views[c * count : (c + 1) * count] for c in range(1, clients)]


def stats(http_url: str, model: str) -> dict[int, int]:
    with urllib.request.urlopen(f"{http_url}/v2/models/{model}/stats") as reply:
        data = json.load(reply)["model_stats"][0]
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in data.get("batch_stats", [])}


def mean_batch(before: dict[int, int], after: dict[int, int], smallest: int = 1) -> float:
    """Mean size of the executions between two statistics snapshots (of those at least ``smallest``)."""
    grown = {size: n - before.get(size, 0) for size, n in after.items() if size >= smallest}
    executions = sum(grown.values())
    return sum(size * n for size, n in grown.items()) / executions if executions else 0.0


def percentiles(values: list[float]) -> dict:
    return {"p50_ms": round(float(np.percentile(values, 50)), 1), "p99_ms": round(float(np.percentile(values, 99)), 1)}


def serve_clients(server, name: str, streams: list[list[np.ndarray]], k: int) -> dict:
    from pcedge.serve.client import ClientOptions, ServedDefense

    results: list[list] = [[] for _ in streams]
    latencies: list[list[float]] = [[] for _ in streams]
    before = {m: stats(server.http_url, m) for m in (name, f"{name}_classifier")}
    barrier = threading.Barrier(len(streams))

    def camera(c: int) -> None:
        with ServedDefense(server.model_uri(name), options=ClientOptions(max_in_flight=1, timeout_s=300)) as client:
            barrier.wait()
            for frame in streams[c]:
                start = time.perf_counter()
                results[c].append(client.predict(frame))
                latencies[c].append((time.perf_counter() - start) * 1e3)

    threads = [threading.Thread(target=camera, args=(c,)) for c in range(len(streams))]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    after = {m: stats(server.http_url, m) for m in (name, f"{name}_classifier")}
    frames = sum(len(s) for s in streams)
    return {"clients": len(streams), "frames": frames, "fps": round(frames / wall, 2),
            "per_client": [percentiles(lat) for lat in latencies],
            "classifier_mean_batch": round(mean_batch(before[f"{name}_classifier"], after[f"{name}_classifier"]), 1),
            "classifier_mean_one_mask_batch": round(mean_batch(before[f"{name}_classifier"], after[f"{name}_classifier"], k), 1),
            "defense_mean_frames_per_execution": round(mean_batch(before[name], after[name]), 2), "results": results}


class CountingRelay:
    """A loopback TCP relay that counts the bytes a client sends to the server."""

    def __init__(self, target_port: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.target_port = target_port
        self.sent = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, counted: bool) -> None:
        try:
            while data := source.recv(1 << 16):
                if counted:
                    self.sent += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()


def wire_bytes_per_frame(server, name: str, frames: list[np.ndarray]) -> float:
    from pcedge.serve.client import ServedDefense

    relay = CountingRelay(server.grpc_port)
    with ServedDefense(f"triton://127.0.0.1:{relay.port}/{name}") as client:
        client.predict(frames[0])  # connection set-up and the config fetch, not counted below
        start = relay.sent
        for frame in frames:
            client.predict(frame)
        return (relay.sent - start) / len(frames)


def local_fps(pc, frames: list[np.ndarray]) -> tuple[float, list]:
    """The local single-process driver saturated: every frame back to back (ONNX Runtime already uses every core)."""
    start = time.perf_counter()
    results = [pc.predict(frame) for frame in frames]
    return len(frames) / (time.perf_counter() - start), results


def paired_latency(pc, server, name: str, frames: list[np.ndarray]) -> dict:
    """One client against the local driver, frame by frame in turn, so the machine's drift hits both alike."""
    from pcedge.serve.client import ServedDefense

    local, served = [], []
    with ServedDefense(server.model_uri(name)) as client:
        for frame in frames:
            t = time.perf_counter()
            pc.predict(frame)
            local.append((time.perf_counter() - t) * 1e3)
            time.sleep(0.1)  # ONNX Runtime's threads spin a while after a call: let them settle before the other side runs
            t = time.perf_counter()
            client.predict(frame)
            served.append((time.perf_counter() - t) * 1e3)
            time.sleep(0.1)
    return {"local": percentiles(local), "served": percentiles(served),
            "p50_ratio": round(float(np.median(served) / np.median(local)), 3)}


def same_pipeline_results(model: Path, streams: list[list[np.ndarray]]) -> list[list]:
    """The local driver on the served pipeline: client resize, then masking and engine at the input size."""
    from pcedge.preprocess import PreprocessSpec
    from pcedge.runtime.driver import PatchCleanser
    from pcedge.runtime.modelfile import read_onnx_metadata
    from pcedge.runtime.ort import OrtEngine
    from pcedge.serve.protocol import client_frame, server_spec

    spec = PreprocessSpec.from_metadata(read_onnx_metadata(model))
    with PatchCleanser.from_onnx(model, backend="ort") as ref:
        masks = ref.mask_set
    with PatchCleanser(OrtEngine(model, backend="ort"), masks, server_spec(spec)) as pc:
        return [[pc.predict(np.ascontiguousarray(client_frame(f, spec)[:, :, ::-1])) for f in s] for s in streams]


def differences(a: list[list], b: list[list], fields: tuple[str, ...] = DECISION) -> int:
    return sum(any(getattr(x, f) != getattr(y, f) for f in fields) for sa, sb in zip(a, b) for x, y in zip(sa, sb))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="an ONNX model (default: the demo's EfficientNet-Lite0, exported once)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--frames", type=int, default=12, help="frames per client")
    parser.add_argument("--classifier-batch", type=int, help="images per classifier execution (default: pcedge triton repo's)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from pcedge.evaluation.demo import ensure_demo_model
    from pcedge.runtime.driver import PatchCleanser
    from pcedge.serve.client import warm_up
    from pcedge.serve.repository import RepositoryOptions, write_repository
    from pcedge.serve.server import TritonServer
    from pcedge.util.machine import machine_info

    model = args.model or ensure_demo_model(Path("demo_out"))
    streams = frames_for(max(args.clients), args.frames, model)
    reference = same_pipeline_results(model, streams)
    report = {"machine": machine_info(), "model": model.name, "frames_per_client": args.frames, "served": []}
    with tempfile.TemporaryDirectory() as tmp, PatchCleanser.from_onnx(model, backend="ort") as pc:
        k = len(pc.mask_set)
        pc.predict(streams[0][0])  # warm-up
        repo = Path(tmp) / "repo"
        write_repository(model, repo, RepositoryOptions(name="defense", classifier="python", classifier_batch=args.classifier_batch))
        report["classifier_max_batch"] = args.classifier_batch or k
        with TritonServer(repo, python=SERVER_PYTHON) as server:
            warm_up(server.grpc_url, "defense")
            report["wire_bytes_per_frame"] = round(wire_bytes_per_frame(server, "defense", streams[0][:4]))
            print(f"bytes on the wire per frame (client -> server, gRPC framing included): {report['wire_bytes_per_frame']}")
            report["one_client_latency"] = one = paired_latency(pc, server, "defense", streams[0] + streams[-1])
            print(f"one client, frame by frame beside the local driver: served p50 {one['served']['p50_ms']} ms, local p50 "
                  f"{one['local']['p50_ms']} ms: ratio {one['p50_ratio']}", flush=True)
            for n in args.clients:
                frames = [f for s in streams[:n] for f in s]
                fps, local_results = local_fps(pc, frames)
                row = serve_clients(server, "defense", streams[:n], k)
                fps_after, _ = local_fps(pc, frames)  # the local driver before and after: the machine's drift in the ratio
                served = row.pop("results")
                row["local_fps"] = round((fps + fps_after) / 2, 2)
                row["fps_ratio"] = round(row["fps"] / row["local_fps"], 3)
                row["decision_differences_same_pipeline"] = differences(served, reference[:n])
                raw = [local_results[c * args.frames : (c + 1) * args.frames] for c in range(n)]
                row["raw_frame_local_differences"] = {"label": differences(served, raw, ("label",)),
                                                      "case_or_level": differences(served, raw, ("case", "level")),
                                                      "any_decision_field": differences(served, raw)}
                report["served"].append(row)
                worst = max(c["p99_ms"] for c in row["per_client"])
                print(f"{n} clients: {row['fps']} FPS, local {row['local_fps']} FPS: ratio {row['fps_ratio']}; worst p99 "
                      f"{worst} ms; classifier mean batch {row['classifier_mean_batch']} (one-mask executions "
                      f"{row['classifier_mean_one_mask_batch']}), {row['defense_mean_frames_per_execution']} frames per "
                      f"defense execution; decision differences {row['decision_differences_same_pipeline']} (same pipeline); "
                      f"against the local driver on raw frames: {row['raw_frame_local_differences']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
