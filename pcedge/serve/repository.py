"""``pcedge triton repo``: a Triton model repository serving the whole defense.

Two models: the classifier (the exported ONNX file, natively as ``onnxruntime_onnx``, as a ``tensorrt_plan``
built on the serving machine, or as a Python-backend model running ONNX Runtime for servers with only the
Python backend) and the defense (a Python-backend model, a shim over :mod:`pcedge.serve.defense_model`, that
masks, decides, and reaches the classifier by BLS). Both have dynamic batchers: the defense's merges frames of
several cameras into one driver step, the classifier's merges BLS calls into batches that are multiples of K.

Every ``config.pbtxt`` is built as a ``ModelConfig`` protobuf from tritonclient (``json_format.ParseDict``
refuses unknown fields and enum values), so a written config always parses against Triton's schema.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import ConfigError
from ..masks import MaskSpec
from ..preprocess import resolve_spec
from ..runtime.modelfile import file_sha256, read_onnx_metadata
from ..util.files import write_text
from ..util.optional import require
from .protocol import FRAME, FRAME_ORDER, OUTPUTS, THREAT_MODEL, TIMINGS, server_spec, spec_to_json, threat_to_json

log = logging.getLogger("pcedge.serve")

CLASSIFIER_KINDS = ("onnx", "python", "tensorrt")
DEVICES = ("cpu", "gpu")
SHIM = ('"""pcedge\'s {what}: the code is {module} (pcedge must be installed in the server\'s Python)."""\n\n'
        "from {module} import TritonPythonModel  # noqa: F401\n")


@dataclass
class RepositoryOptions:
    """What ``pcedge triton repo`` takes besides the model file (defaults: a CPU server with the pip wheel's needs)."""

    name: str | None = None  # the defense model's name (default: the model file's stem); the classifier is NAME_classifier
    classifier: str = "onnx"
    device: str = "cpu"
    instances: int = 1
    classifier_batch: int | None = None  # images per classifier execution, a multiple of K (default: K on a CPU, 4K on a GPU)
    frames_batch: int = 8  # frames per defense execution
    queue_delay_us: int = 2000  # how long the defense's batcher waits for other cameras' frames
    classifier_queue_delay_us: int = 0  # the defense already merged its frames; > 0 helps only with several defense instances
    second_round: str = "auto"
    trt_accelerate: bool = False  # onnx classifier on a GPU: ONNX Runtime's TensorRT execution provider
    masks: MaskSpec = field(default_factory=MaskSpec)
    spec_overrides: dict = field(default_factory=dict)


def write_repository(model_path: str | Path, out: str | Path, options: RepositoryOptions | None = None) -> dict[str, Any]:
    """Write the repository; returns what it holds (names, K, batch sizes) for the command's summary."""
    options = options or RepositoryOptions()
    _check(options)
    model_path, out = Path(model_path), Path(out)
    metadata = read_onnx_metadata(model_path)
    spec = resolve_spec(options.spec_overrides, metadata)
    mask_set = options.masks.build(spec.input_size)  # the proof runs here: an insecure default is refused at generation
    k = len(mask_set)
    # measured on the 2-core CPU (benchmarks/RESULTS.md): executions of 2-4K images cost 1.4x more per image than K
    # inside the Python backend, so a CPU classifier takes one frame's K per call (frames of several cameras still
    # share each step and its merged second rounds); a GPU amortizes its per-call cost over 4K
    batch = options.classifier_batch or (4 * k if options.device == "gpu" else k)
    if batch % k:
        raise ConfigError(f"--classifier-batch {batch} is not a multiple of K={k} (a step's one-mask rounds would split)")
    input_name, num_classes = _classifier_io(model_path)
    name = options.name or model_path.stem
    classifier = f"{name}_classifier"
    foreign = [p.name for p in out.iterdir() if p.name != "README.md" and not (p / "config.pbtxt").is_file()] if out.is_dir() else []
    if foreign:  # adding a model beside others is normal; writing into an unrelated folder is not
        raise ConfigError(f"{out} holds {', '.join(sorted(foreign)[:5])}, which are not Triton models: choose an empty or new folder")
    for stale in (out / name, out / classifier):
        shutil.rmtree(stale, ignore_errors=True)
    params = {"pcedge_version": __version__, "preprocessing": spec_to_json(spec),
              "server_preprocessing": spec_to_json(server_spec(spec)), "threat_model": threat_to_json(options.masks),
              "num_masks": str(k), "classifier": classifier, "classifier_input": input_name,
              "classifier_max_batch": str(batch), "model_sha256": file_sha256(model_path), "frame_order": FRAME_ORDER,
              "second_round": options.second_round, "timings": ",".join(TIMINGS),
              "pipeline": "client: resize and center-crop per 'preprocessing' to the input size, uint8 RGB; server: "
                          "normalize, mask and classify per 'server_preprocessing' (the certified pipeline is both)"}
    configs = {name: _defense_config(name, spec.input_size, options, params),
               classifier: _classifier_config(classifier, options, input_name, spec.input_size, num_classes, batch, k)}
    for model, config in configs.items():
        write_text(out / model / "config.pbtxt", config)
    version = out / classifier / "1"
    if options.classifier == "tensorrt":
        shutil.copyfile(model_path, out / classifier / "model.onnx")
        write_text(out / classifier / "build_plan.sh", _trtexec_script(input_name, spec.input_size, k, batch))
        (out / classifier / "build_plan.sh").chmod(0o755)
        version.mkdir(parents=True, exist_ok=True)
    else:
        version.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model_path, version / "model.onnx")
    if options.classifier == "python":
        write_text(version / "model.py", SHIM.format(what="classifier", module="pcedge.serve.classifier_model"))
    write_text(out / name / "1" / "model.py", SHIM.format(what="defense", module="pcedge.serve.defense_model"))
    summary = {"repository": str(out), "defense": name, "classifier": classifier, "classifier_kind": options.classifier,
               "num_masks": k, "threat": mask_set.threat.describe(), "classifier_max_batch": batch,
               "frames_per_execution": options.frames_batch, "device": options.device, "instances": options.instances}
    write_text(out / "README.md", _readme(summary, spec.input_size))  # the latest model's; every model's is in its config
    return summary


def parse_config(text: str) -> Any:
    """A config.pbtxt as Triton's ModelConfig protobuf (raises on unknown fields and enum values)."""
    text_format = require("google.protobuf.text_format", "checking Triton model configs")
    pb = require("tritonclient.grpc.model_config_pb2", "writing Triton model configs (pip install 'tritonclient[grpc]')")
    return text_format.Parse(text, pb.ModelConfig())


# ------------------------------------------------------------------------------------------ configs
def _check(options: RepositoryOptions) -> None:
    if options.classifier not in CLASSIFIER_KINDS:
        raise ConfigError(f"classifier must be one of {CLASSIFIER_KINDS}, got {options.classifier!r}")
    if options.device not in DEVICES:
        raise ConfigError(f"device must be one of {DEVICES}, got {options.device!r}")
    if options.classifier == "tensorrt" and options.device != "gpu":
        raise ConfigError("a TensorRT classifier runs on a GPU: add --device gpu")
    if options.trt_accelerate and (options.classifier != "onnx" or options.device != "gpu"):
        raise ConfigError("--trt-accelerate is for the onnx classifier on a GPU (--classifier onnx --device gpu)")
    if min(options.instances, options.frames_batch) < 1 or min(options.queue_delay_us, options.classifier_queue_delay_us) < 0:
        raise ConfigError("instances and frames per execution must be >= 1, queue delays >= 0")


def _to_text(config: dict) -> str:
    json_format = require("google.protobuf.json_format", "writing Triton model configs")
    text_format = require("google.protobuf.text_format", "writing Triton model configs")
    pb = require("tritonclient.grpc.model_config_pb2", "writing Triton model configs (pip install 'tritonclient[grpc]')")
    try:
        message = json_format.ParseDict(config, pb.ModelConfig())
    except json_format.ParseError as exc:  # a bug here, never the user's input: say which config
        raise ConfigError(f"the generated config of {config.get('name')} does not fit Triton's schema: {exc}") from exc
    text = text_format.MessageToString(message)
    parse_config(text)
    return text


def _instances(options: RepositoryOptions, count: int) -> list[dict]:
    return [{"kind": "KIND_GPU" if options.device == "gpu" else "KIND_CPU", "count": count}]


def _defense_config(name: str, size: tuple[int, int], options: RepositoryOptions, params: dict[str, str]) -> str:
    outputs = [{"name": n, "data_type": t, "dims": d} for n, (t, d) in OUTPUTS.items()]
    return _to_text({
        "name": name, "backend": "python", "max_batch_size": options.frames_batch,
        "input": [{"name": FRAME, "data_type": "TYPE_UINT8", "dims": [size[0], size[1], 3]},
                  {"name": THREAT_MODEL, "data_type": "TYPE_STRING", "dims": [1], "optional": True}],
        "output": outputs,
        "dynamic_batching": {"max_queue_delay_microseconds": options.queue_delay_us},
        # the masking writer runs on the host; one instance per core pair keeps the classifier busy
        "instance_group": [{"kind": "KIND_CPU", "count": options.instances}],
        "parameters": {k: {"string_value": v} for k, v in params.items()},
    })


def _classifier_config(name: str, options: RepositoryOptions, input_name: str, size: tuple[int, int], classes: int,
                       batch: int, k: int) -> str:
    python = options.classifier == "python"
    labels = {"name": "labels", "data_type": "TYPE_INT64", "dims": [1]}
    if not python:
        labels["reshape"] = {"shape": []}  # the ONNX graph's ArgMax gives (N,); Triton needs a dim per item
    config: dict[str, Any] = {
        "name": name, "max_batch_size": batch,
        "input": [{"name": input_name, "data_type": "TYPE_FP32", "dims": [3, size[0], size[1]]}],
        "output": [labels, {"name": "logits", "data_type": "TYPE_FP32", "dims": [classes]}],
        "dynamic_batching": {"preferred_batch_size": [m * k for m in range(1, batch // k + 1)],
                             "max_queue_delay_microseconds": options.classifier_queue_delay_us},
        "instance_group": _instances(options, options.instances),
    }
    if python:
        config["backend"] = "python"
    elif options.classifier == "onnx":
        config["platform"] = "onnxruntime_onnx"
        if options.trt_accelerate:
            config["optimization"] = {"execution_accelerators": {"gpu_execution_accelerator": [
                {"name": "tensorrt", "parameters": {"precision_mode": "FP16", "max_workspace_size_bytes": str(1 << 30)}}]}}
    else:
        config["platform"] = "tensorrt_plan"
    return _to_text(config)


def _classifier_io(path: Path) -> tuple[str, int]:
    """The classifier's input name and class count (from ONNX Runtime's view of the file)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = {o.name: o.shape for o in session.get_outputs()}
    if "labels" not in outputs or "logits" not in outputs:
        raise ConfigError(f"{path.name} has outputs {sorted(outputs)}; pcedge triton repo serves models made by pcedge export "
                          "(outputs 'logits' and 'labels')")
    classes = outputs["logits"][-1]
    if not isinstance(classes, int):
        raise ConfigError(f"{path.name}: the logits' class axis is not fixed ({outputs['logits']})")
    return session.get_inputs()[0].name, classes


def _trtexec_script(input_name: str, size: tuple[int, int], k: int, batch: int) -> str:
    shape = f"3x{size[0]}x{size[1]}"
    return ("#!/bin/sh\n# Build the TensorRT plan on the serving machine (a plan is specific to its GPU and TensorRT version).\n"
            "set -e\ncd \"$(dirname \"$0\")\"\n"
            f"trtexec --onnx=model.onnx --saveEngine=1/model.plan --fp16 --minShapes={input_name}:1x{shape} "
            f"--optShapes={input_name}:{k}x{shape} --maxShapes={input_name}:{batch}x{shape}\n")


def _readme(s: dict, size: tuple[int, int]) -> str:
    plan = ("\nThe classifier is a TensorRT plan: build it on the serving machine first with "
            f"`{s['classifier']}/build_plan.sh` (trtexec, in NVIDIA's container or on the Jetson).\n"
            if s["classifier_kind"] == "tensorrt" else "")
    return f"""# pcedge Triton model repository

Made by `pcedge triton repo` (pcedge {__version__}). Models:

- `{s['defense']}`: the PatchCleanser defense (Python backend; `model.py` imports `pcedge.serve.defense_model`).
  K = {s['num_masks']} masks ({s['threat']}); up to {s['frames_per_execution']} frames per execution.
  Input `{FRAME}`: uint8 {size[0]}x{size[1]}x3 RGB, resized and center-cropped by the client as the config's
  `preprocessing` parameter says. Outputs: {', '.join(OUTPUTS)}.
- `{s['classifier']}`: the classifier ({s['classifier_kind']}), up to {s['classifier_max_batch']} images per execution.
{plan}
The server's Python needs pcedge (`pip install patchcleanser-edge[cpu]`) for the Python-backend models.

## Serving it

- Here, with the pip server (Python backend only: generate with `--classifier python`):
  `pcedge triton serve --repo {s['repository']}`
- NVIDIA's container (x86 GPU servers):
  `docker run --gpus all --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 -v $PWD/{Path(s['repository']).name}:/models \\
   nvcr.io/nvidia/tritonserver:24.10-py3 sh -c "pip install patchcleanser-edge[cpu] && tritonserver --model-repository=/models"`
- Jetson (JetPack 6): the Triton release for JetPack (`tritonserver*-igpu.tgz` from Triton's GitHub releases),
  `tritonserver --model-repository={s['repository']} --backend-directory=/opt/tritonserver/backends`.

Clients: `pcedge run --model triton://HOST:8001/{s['defense']} --source ...` (gRPC port).
"""
