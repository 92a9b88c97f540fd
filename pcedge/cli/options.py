"""Option groups every command shares (mask set, engine, preprocessing), so a flag is parsed and validated
the same way wherever it appears, and the few argument types behind them."""

from __future__ import annotations

import argparse
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..errors import ConfigError
from ..preprocess import INTERPOLATIONS
from ..runtime.backends import MODEL_FILE_BACKENDS
from ..runtime.openvino import DEVICES

if TYPE_CHECKING:
    from ..masks import MaskSpec

log = logging.getLogger("pcedge")

EXIT_CODES = ("exit codes: 0 normal end; 1 failure (model, source, or a live source lost); 2 bad usage; "
              "130 Ctrl-C; 143 SIGTERM; 141 stdout closed")


class Formatter(argparse.RawDescriptionHelpFormatter, argparse.HelpFormatter):
    """Keeps the examples' line breaks; shows a default once, and only where it says something."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, True, "", argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _whole_number_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is not allowed: give {minimum} or more")
        return value

    return parse


positive_int = _whole_number_at_least(1)
non_negative_int = _whole_number_at_least(0)


def patch_text(text: str) -> str:
    """Checks what can be checked without the image size (pcedge.masks.check_patch_text), naming the flag."""
    from ..masks import check_patch_text

    try:
        check_patch_text(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def model_file(text: str) -> Path:
    """An existing model file; a folder gets the files it holds named."""
    if text.startswith("triton://"):
        raise argparse.ArgumentTypeError(f"{text}: this command runs a local engine and needs a model file (triton:// models "
                                         "work with predict and run; benchmarks/bm_triton.py measures a served defense)")
    path = Path(text)
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.onnx"))
        hint = f" (it holds {', '.join(inside)})" if inside else " (it holds no .onnx file)"
        raise argparse.ArgumentTypeError(f"{text} is a folder: pass the .onnx file inside it{hint}")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text} does not exist (export a model with: pcedge export --model efficientnet-lite0 "
                                         f"--out model.onnx)")
    return path


def image_size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("x", " ").replace(",", " ").split()
    if len(parts) == 1:
        return int(parts[0]), int(parts[0])
    if len(parts) == 2:
        return int(parts[0]), int(parts[1])
    raise argparse.ArgumentTypeError(f"image size {text!r}: use 224 or 480x640 (height x width)")


def add_mask_options(parser: argparse.ArgumentParser, *, with_size: bool = False) -> None:
    """The threat-model options shared by every command that builds a mask set."""
    group = parser.add_argument_group("mask set (threat model)")
    if with_size:
        group.add_argument("--image-size", type=image_size, default=(224, 224), help="model input size: 224 or HxW")
    group.add_argument("--patch", type=patch_text, default="2%", help="patch size: '2%%' of the image, '32' pixels, or '32x16' (h x w)")
    group.add_argument("--masks-per-axis", type=positive_int, default=6, help="k masks per axis (K = k*k masks in all)")
    group.add_argument("--stride", type=positive_int, default=None, help="mask stride in pixels (overrides --masks-per-axis)")
    group.add_argument("--mask-size", type=positive_int, default=None,
                       help="fix the mask side in pixels (default: the secure patch + stride - 1); insecure combinations are refused")
    group.add_argument("--two-patches", action="store_true", help="defend against two patches (K*(K-1)/2 union masks)")


def mask_spec_from_args(args: argparse.Namespace) -> "MaskSpec":
    """The threat model the mask options name (the set itself needs the model's input size: ``.build(size)``)."""
    from ..masks import MaskSpec

    return MaskSpec(args.patch, args.masks_per_axis, args.stride, args.two_patches, args.mask_size)


def save_report(args: argparse.Namespace, report: dict, plot: Callable[[dict, str], None]) -> None:
    """``--json FILE`` and ``--plot FILE`` of the commands that produce a report."""
    from ..util.files import write_json

    if args.json:
        write_json(args.json, report)
    if args.plot:
        plot(report, args.plot)


def announce_engine(model, extra: str = "") -> None:
    """The one line that says what runs: engine, mask set, threat model, second-round schedule."""
    log.info("engine: %s; %d masks (%s); second round: %s%s", model.engine.describe(), len(model.mask_set),
             model.mask_set.threat.describe(), model.schedule, f"; {extra}" if extra else "")


def floats3(text: str) -> tuple[float, float, float]:
    values = [float(v) for v in text.replace(",", " ").split()]
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"{text!r}: give three numbers, e.g. 0.485,0.456,0.406")
    return tuple(values)  # type: ignore[return-value]


def add_preprocessing_options(parser: argparse.ArgumentParser, *, exporting: bool = False) -> None:
    """The preprocessing flags. When exporting they say what to record (default: the model's own, else
    ImageNet's); when running they override what the model's metadata says (needed only for models
    exported elsewhere). :func:`preprocessing_overrides` reads them back."""
    title = ("preprocessing to record in the model (default: the model's own, else ImageNet's)" if exporting
             else "preprocessing (only for models without pcedge metadata, or to override it)")
    group = parser.add_argument_group(title)
    group.add_argument("--image-size", type=image_size, help="model input size: 224 or HxW")
    group.add_argument("--mean", type=floats3, help="per-channel mean in 0..1, e.g. 0.485,0.456,0.406")
    group.add_argument("--std", type=floats3, help="per-channel std in 0..1")
    group.add_argument("--crop-pct", type=crop_fraction, help="center-crop fraction in (0, 1] (timm's crop_pct)")
    group.add_argument("--interpolation", choices=INTERPOLATIONS, help="resize interpolation")


def preprocessing_overrides(args: argparse.Namespace) -> dict:
    """The preprocessing flags as :class:`pcedge.preprocess.PreprocessSpec` fields (None: not given), for
    :func:`pcedge.preprocess.resolve_spec`, the one precedence rule."""
    return {"input_size": args.image_size, "mean": args.mean, "std": args.std, "crop_pct": args.crop_pct,
            "interpolation": args.interpolation}


def crop_fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{value} is not in (0, 1]: 0.875 keeps the central 87.5%")
    return value


def model_or_server(text: str) -> Path | str:
    """A model file, or a defense served by Triton (``triton://HOST:PORT/NAME``, checked when connecting)."""
    if text.startswith("triton://"):
        from ..serve.client import parse_triton_uri

        try:
            parse_triton_uri(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text
    return model_file(text)


def add_engine_options(parser: argparse.ArgumentParser, *, servable: bool = False, model_required: bool = True) -> None:
    """Backend and second-round options shared by the commands that run the defended model (``servable``: the
    model may also be a Triton URI, with the client options; ``model_required=False``: the command checks --model
    itself, as ``pcedge certify`` does since ``pcedge certify merge`` needs none)."""
    parser.add_argument("--model", required=model_required, type=model_or_server if servable else model_file,
                        help="an ONNX model exported by pcedge export" +
                             (", or triton://HOST:PORT/NAME for a defense served by Triton (pcedge triton)" if servable else ""))
    add_backend_options(parser)
    add_mask_options(parser)
    parser.add_argument("--second-round", default="auto", choices=["auto", "per-disagreer", "all"],
                        help="how second-round images are batched: auto follows this engine's latency per batch size "
                             "(measured once, cached); per-disagreer: one call per disagreeing mask; all: every "
                             "disagreer at once. Every choice returns the same labels")
    parser.add_argument("--budget", type=non_negative_int, help="cap on second-round passes (the result says 'budget' when hit)")
    add_preprocessing_options(parser)
    if servable:
        group = parser.add_argument_group("Triton client (triton:// models)")
        group.add_argument("--triton-timeout", type=float, default=30.0, help="seconds one request may take")
        group.add_argument("--triton-in-flight", type=positive_int, default=8, help="requests in flight at once (frames of a step)")
        group.add_argument("--triton-ssl", action="store_true", help="gRPC over TLS")
        group.add_argument("--triton-ca", help="TLS root certificates (PEM) to trust the server with")
        group.add_argument("--triton-cert", help="client certificate chain (PEM), for servers that check clients")
        group.add_argument("--triton-key", help="client private key (PEM)")
        group.add_argument("--triton-header", action="append", default=[], metavar="KEY=VALUE",
                           help="a header on every request, e.g. an auth token for restricted endpoints (repeatable)")


def add_backend_options(parser: argparse.ArgumentParser, *, repeatable: bool = False) -> None:
    """``--backend`` and OpenVINO's ``--device`` (``repeatable``: several backends to measure, as pcedge bench takes)."""
    text = ("auto: TensorRT, then ONNX Runtime CUDA, then on the CPU ONNX Runtime, or OpenVINO where it is installed and "
            "measured faster on this machine (the engine that runs, and why, is printed)")
    if repeatable:
        parser.add_argument("--backend", action="append", choices=MODEL_FILE_BACKENDS,
                            help=f"backend(s) to measure; repeat the option for several (default: auto). {text}")
    else:
        parser.add_argument("--backend", default="auto", choices=MODEL_FILE_BACKENDS, help=text)
    parser.add_argument("--device", default="CPU", choices=DEVICES,
                        help="OpenVINO's device (--backend openvino, or auto's comparison): CPU, the integrated GPU, the NPU, "
                             "or AUTO; one OpenVINO does not find here is refused, naming those it finds")


def defended_model_from_args(args: argparse.Namespace, max_batch: int | Callable[[int], int] | None = None,
                             stop: threading.Event | None = None):
    """The defended model the engine, mask and preprocessing options describe (``max_batch``: see ``from_onnx``): a
    local engine for a model file, the served defense for a ``triton://`` model (mask flags other than the
    defaults are asked of the server; ``stop`` cuts its retries short)."""
    from ..serve.models import open_defended_model

    return open_defended_model(args.model, masks=mask_spec_from_args(args), backend=args.backend, device=args.device,
                               second_round=args.second_round, budget=args.budget, spec_overrides=preprocessing_overrides(args),
                               max_batch=max_batch,
                               client=client_options_from_args(args) if isinstance(args.model, str) else None, stop=stop)


def client_options_from_args(args: argparse.Namespace):
    """The Triton client flags as :class:`pcedge.serve.client.ClientOptions` (files and headers checked here)."""
    from ..serve.client import ClientOptions

    headers = {}
    for item in args.triton_header:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--triton-header {item!r}: use KEY=VALUE")
        headers[key] = value
    for path in (args.triton_ca, args.triton_key, args.triton_cert):
        if path and not Path(path).is_file():
            raise ConfigError(f"{path} does not exist (a PEM file for the Triton client's TLS)")
    return ClientOptions(timeout_s=args.triton_timeout, reconnect_s=getattr(args, "reconnect", 30.0),
                         max_in_flight=args.triton_in_flight, ssl=args.triton_ssl or bool(args.triton_ca),
                         root_certificates=args.triton_ca, private_key=args.triton_key, certificate_chain=args.triton_cert,
                         headers=headers)
