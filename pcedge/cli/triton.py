"""pcedge triton: a Triton Inference Server model repository for the defense, and a server to run it here."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..util.signals import stop_on_signals
from .options import (
    add_mask_options,
    add_preprocessing_options,
    mask_spec_from_args,
    model_file,
    non_negative_int,
    positive_int,
    preprocessing_overrides,
)

log = logging.getLogger("pcedge")


def run(args: argparse.Namespace) -> int:
    return _repo(args) if args.triton_command == "repo" else _serve(args)


def _repo(args: argparse.Namespace) -> int:
    from ..serve.repository import RepositoryOptions, write_repository

    options = RepositoryOptions(name=args.name, classifier=args.classifier, device=args.device, instances=args.instances,
                                classifier_batch=args.classifier_batch, frames_batch=args.frames_batch,
                                queue_delay_us=args.queue_delay_us, second_round=args.second_round,
                                trt_accelerate=args.trt_accelerate, masks=mask_spec_from_args(args),
                                spec_overrides=preprocessing_overrides(args))
    s = write_repository(args.model, args.out, options)
    print(f"wrote {s['repository']}: defense '{s['defense']}' (K={s['num_masks']}, {s['threat']}, up to "
          f"{s['frames_per_execution']} frames per execution) and classifier '{s['classifier']}' ({s['classifier_kind']}, "
          f"{s['device']}, up to {s['classifier_max_batch']} images per execution); configs checked against Triton's schema")
    hint = "" if args.classifier == "python" else " (NVIDIA's container; the pip server here has only the Python backend: --classifier python)"
    print(f"serve it: pcedge triton serve --repo {s['repository']}{hint}; clients: --model triton://HOST:8001/{s['defense']}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from ..serve.client import warm_up
    from ..serve.server import TritonServer

    with stop_on_signals() as (stop, received):
        with TritonServer(args.repo, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                          metrics_port=args.metrics_port, log_file=args.log, python=args.python,
                          extra_args=args.server_arg) as server:
            for model in _defenses(Path(args.repo)):
                log.info("warming up %s (its drivers measure the classifier's latency curve once)", model)
                log.info("%s ready after %.1f s", model, warm_up(server.grpc_url, model))
            print(f"tritonserver ready: gRPC {server.grpc_url} (clients: --model {server.model_uri('NAME')}), "
                  f"HTTP {server.http_url}, metrics {server.metrics_url}; Ctrl-C stops it", flush=True)
            while not stop.wait(1.0):
                if server.process is None or server.process.poll() is not None:
                    log.error("tritonserver exited (code %s)%s", server.process.returncode if server.process else "?",
                              f"; its log: {args.log}" if args.log else "; rerun with --log FILE to keep its log")
                    return 1
            log.info("stopping tritonserver (in-flight requests finish first)")
    return 128 + received[0] if received else 0


def _defenses(repo: Path) -> list[str]:
    """The repository's pcedge defense models (configs that publish a threat model)."""
    return sorted(p.parent.name for p in repo.glob("*/config.pbtxt") if '"threat_model"' in p.read_text(encoding="utf-8"))


PARSER = dict(
    help="serve the defense from NVIDIA Triton Inference Server (model repository, local server)",
    description="Make a Triton model repository for an exported model (the defense as a Python-backend model "
                "over a classifier model), or start a tritonserver on this machine for it.",
    epilog="examples:\n"
           "  pcedge triton repo --model lite0.onnx --out repo/ --classifier python   # for the pip server\n"
           "  pcedge triton repo --model lite0.onnx --out repo/ --classifier onnx --device gpu --trt-accelerate\n"
           "  pcedge triton serve --repo repo/ --host 0.0.0.0 --python srv/bin/python\n"
           "  pcedge run --model triton://server:8001/lite0 --source cam1=rtsp://10.0.0.5/cam --source cam2=0",
)


def add_options(p: argparse.ArgumentParser) -> None:
    from ..runtime.driver import SECOND_ROUND_MODES
    from ..serve.repository import CLASSIFIER_KINDS, DEVICES

    sub = p.add_subparsers(dest="triton_command", metavar="{repo,serve}", required=True,
                           help="repo: write a model repository; serve: run tritonserver on one")
    repo = sub.add_parser("repo", help="write a Triton model repository for an exported model",
                          formatter_class=p.formatter_class)
    repo.add_argument("--model", required=True, type=model_file, help="an ONNX model exported by pcedge export")
    repo.add_argument("--out", required=True, help="the repository folder (models already there stay)")
    repo.add_argument("--name", help="the defense model's name (default: the model file's name); the classifier is NAME_classifier")
    repo.add_argument("--classifier", choices=CLASSIFIER_KINDS, default="onnx",
                      help="onnx: Triton's ONNX Runtime backend; tensorrt: a plan built on the server (build_plan.sh); "
                           "python: ONNX Runtime inside the Python backend (the pip server, CPU hosts)")
    repo.add_argument("--device", choices=DEVICES, default="cpu", help="where the classifier's instances run")
    repo.add_argument("--instances", type=positive_int, default=1, help="instances of each model")
    repo.add_argument("--classifier-batch", type=positive_int, help="images per classifier execution, a multiple of K (default: K on a CPU, where larger calls were measured "
                           "slower; 4K on a GPU)")
    repo.add_argument("--frames-batch", type=positive_int, default=8, help="frames (of any cameras) per defense execution")
    repo.add_argument("--queue-delay-us", type=non_negative_int, default=2000,
                      help="how long the defense's batcher waits for other cameras' frames")
    repo.add_argument("--second-round", choices=SECOND_ROUND_MODES, default="auto", help="the served second round's schedule")
    repo.add_argument("--trt-accelerate", action="store_true", help="onnx classifier on a GPU: ONNX Runtime's TensorRT provider (FP16)")
    add_mask_options(repo)
    add_preprocessing_options(repo)
    serve = sub.add_parser("serve", help="start tritonserver on this machine for a repository (Ctrl-C stops it)",
                           formatter_class=p.formatter_class)
    serve.add_argument("--repo", required=True, help="a repository made by pcedge triton repo")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface, for cameras elsewhere)")
    serve.add_argument("--grpc-port", type=non_negative_int, default=8001, help="gRPC port (what triton:// URIs name; 0: a free one)")
    serve.add_argument("--http-port", type=non_negative_int, default=8000, help="HTTP port (health, statistics)")
    serve.add_argument("--metrics-port", type=non_negative_int, default=8002, help="Prometheus metrics port")
    serve.add_argument("--python", help="the Python the defense runs in: needs pcedge, onnxruntime and numpy<2 "
                                        "(default: this one)")
    serve.add_argument("--log", help="append the server's own log to this file")
    serve.add_argument("--server-arg", action="append", default=[], metavar="=FLAG",
                       help="a tritonserver flag passed as is, e.g. --server-arg=--grpc-use-ssl=true (with --grpc-server-cert, "
                            "--grpc-server-key) or --server-arg=--grpc-restricted-protocol=inference:token=SECRET (repeatable)")
