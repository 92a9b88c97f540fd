"""Label-free masked fine-tuning of EfficientNet-Lite0, before and after, on footage the training never saw (issue 21).

    python benchmarks/bm_distill.py prepare                      # training clips from Debian packages (offline)
    python benchmarks/bm_distill.py train --minutes 35           # pcedge finetune --unlabeled, the real command
    python benchmarks/bm_distill.py evaluate --json benchmarks/results/distill_cpu.json   # --student A.onnx --student B.onnx: several
    python benchmarks/bm_distill.py table benchmarks/results/distill_cpu.json   # the Markdown table again

Training footage (all from Debian packages, none of it evaluated): OpenCV's sample videos ``vtest.avi`` (a fixed
street camera, frames 0-599) and ``tree.avi`` (frames 0-47), ``Megamind.avi`` (all), and camera-like pans over
the photos of ``mate-backgrounds`` (nature) and OpenCV's sample photos. Evaluation, in one run, both models:
unseen scenes (camera-like views of scikit-image's photos, the demo's scenes), the same cameras later in time
(``vtest.avi`` frames 600-794, ``tree.avi`` frames 48-67: it decodes 68), the 20 labelled ImageNet photos of the foolbox
wheel (clean, defended, certified accuracy with Wilson intervals; undefended top-1), INT8 (``quantize_int8``:
agreement with FP32 on masked images of the unseen scenes, and its speed), and the demo's patched segment
(lossless FFV1, H.264, MJPEG): frames at the patch level and defended label still a cup.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
MATE_NATURE = Path("/usr/share/backgrounds/mate/nature")
OPENCV_PHOTOS = ("aero1.jpg", "aero3.jpg", "apple.jpg", "baboon.jpg", "building.jpg", "butterfly.jpg", "fruits.jpg", "home.jpg",
                 "messi5.jpg", "orange.jpg", "starry_night.jpg", "stuff.jpg", "squirrel_cls.jpg", "HappyFish.jpg", "lena.jpg",
                 "board.jpg", "leuvenA.jpg", "graf1.png", "smarties.png", "rubberwhale1.png", "basketball1.png", "aloeL.jpg",
                 "box_in_scene.png", "ela_original.jpg", "licenseplate_motion.jpg", "pca_test1.jpg", "chicky_512.png",
                 "Blender_Suzanne1.jpg", "cards.png", "left.jpg")
TRAIN_CUTS = {"vtest.avi": 600, "tree.avi": 48, "Megamind.avi": None}  # tree.avi decodes 68 frames  # the later frames are the "next week" evaluation
WORK = ROOT / "demo_out" / "distill"
VIEWS_PER_PHOTO = 24


def cut_clip(source: Path, out: Path, end: int | None) -> int:
    """Frames [0, end) of ``source`` as lossless FFV1 (what training reads)."""
    capture = cv2.VideoCapture(str(source))
    writer, n = None, 0
    while end is None or n < end:
        ok, frame = capture.read()
        if not ok:
            break
        if writer is None:
            writer = cv2.VideoWriter(str(out), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"FFV1"), 25, (frame.shape[1], frame.shape[0]))
        writer.write(frame)
        n += 1
    writer.release()
    return n


def photo_pans(photos: list[Path], out: Path, size: tuple[int, int] = (720, 1280)) -> int:
    """Camera-like pans (pcedge.evaluation.democlip.camera_view) over training photos, one FFV1 clip."""
    from pcedge.evaluation.democlip import camera_view

    writer = cv2.VideoWriter(str(out), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"FFV1"), 25, (size[1], size[0]))
    n = 0
    for path in photos:
        photo = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if photo is None or min(photo.shape[:2]) < 200:
            continue
        for t in np.linspace(0, 1, VIEWS_PER_PHOTO):
            writer.write(camera_view(photo, float(t), size)[0])
            n += 1
    writer.release()
    return n


def prepare(args: argparse.Namespace) -> None:
    if not OPENCV_DATA.is_dir() or not MATE_NATURE.is_dir():
        raise SystemExit("needs Debian's opencv-doc and mate-backgrounds: apt install opencv-doc mate-backgrounds")
    WORK.mkdir(parents=True, exist_ok=True)
    for name, end in TRAIN_CUTS.items():
        print(f"{name}: {cut_clip(OPENCV_DATA / name, WORK / f'train_{Path(name).stem}.avi', end)} training frames")
    for name, photos in (("mate", sorted(MATE_NATURE.glob("*.jpg"))),
                         ("opencv", [OPENCV_DATA / n for n in OPENCV_PHOTOS if (OPENCV_DATA / n).is_file()])):
        print(f"photo pans ({name}): {photo_pans(photos, WORK / f'train_pans_{name}.avi')} frames")


def train(args: argparse.Namespace) -> None:
    from pcedge.evaluation.demo import ensure_demo_model

    ensure_demo_model(ROOT / "demo_out")
    clips = sorted(WORK.glob("train_*.avi"))
    if not clips:
        raise SystemExit("run 'prepare' first")
    command = [sys.executable, "-m", "pcedge", "finetune", "--model", "efficientnet-lite0", "--out", str(WORK / "lite0_distilled.onnx"),
               "--every", "3", "--max-frames", "240", "--max-minutes", str(args.minutes), "--max-steps", str(args.steps),
               "--validate-every", str(args.validate_every), "--save-checkpoint", str(WORK / "lite0_distill.pt"),
               "--lr", str(args.lr), "--unmasked-weight", str(args.unmasked_weight),
               "--pseudo-label-weight", str(args.pseudo_label_weight),
               "--pseudo-label-confidence", str(args.pseudo_label_confidence), "--patience", str(args.patience), "--batch-size", str(args.batch_size)]
    for clip in clips:
        command += ["--unlabeled", str(clip)]
    if args.resume:
        command += ["--resume", str(WORK / "lite0_distill.pt")]
    print(" ".join(command), flush=True)
    subprocess.run(command, check=True)


def frames_of(path: Path, start: int, end: int | None, every: int) -> list[np.ndarray]:
    capture, out, n = cv2.VideoCapture(str(path)), [], 0
    while end is None or n < end:
        ok, frame = capture.read()
        if not ok:
            break
        if n >= start and (n - start) % every == 0:
            out.append(frame)
        n += 1
    return out


def clean_metrics(pc, frames: list[np.ndarray]) -> dict:
    """Uncertain rate, two-mask images per frame, latency against one undefended batch-K inference (same run)."""
    pc.predict(frames[0])
    results, defended, undefended = [], [], []
    k = len(pc.mask_set)
    for frame in frames:
        t = time.perf_counter()
        results.append(pc.predict(frame))
        defended.append(time.perf_counter() - t)
        t = time.perf_counter()
        pc.undefended_labels(frame, k)
        undefended.append(time.perf_counter() - t)
    levels = [r.level for r in results]
    return {"frames": len(frames), "uncertain_or_patch_rate": round(1 - levels.count("clear") / len(frames), 3),
            "patch_level_rate": round(levels.count("patch") / len(frames), 3),
            "two_mask_images_per_frame": round(float(np.mean([r.two_mask_passes for r in results])), 2),
            "mean_latency_ms": round(float(np.mean(defended)) * 1e3, 1),
            "undefended_batch_k_ms": round(float(np.mean(undefended)) * 1e3, 1),
            "latency_ratio": round(float(np.mean(defended) / np.mean(undefended)), 3)}


def labelled_metrics(pc, model_path: Path) -> dict:
    """The 20 labelled ImageNet photos: undefended (clean) top-1, defended and certified accuracy, Wilson 95% intervals."""
    from pcedge.evaluation.certification import build_report, certify, wilson_interval
    from pcedge.evaluation.datasets import load_dataset
    from pcedge.evaluation.sample_data import imagenet_sample_folder

    dataset = load_dataset(imagenet_sample_folder(include_skimage=False), class_names=pc.class_names)
    report = build_report(certify(pc, dataset, model_path=model_path, progress=False), dataset)
    n = report["num_images"]
    out = {"images": n}
    for key in ("clean_accuracy", "defended_accuracy", "certified_accuracy"):
        hits = int(round(report[key] * n))
        out[key] = f"{hits}/{n}"
        out[f"{key}_ci95"] = [round(v, 3) for v in wilson_interval(hits, n)]
    return out


def int8_metrics(model_path: Path, calibration: list[np.ndarray], held_out: list[np.ndarray], workdir: Path) -> dict:
    from pcedge.export.quantize import quantize_int8
    from pcedge.runtime.ort import OrtEngine

    out = workdir / f"{model_path.stem}_int8.onnx"
    report = quantize_int8(model_path, out, calibration, held_out_frames=held_out, force=True)
    timings = {}
    for name, path in (("fp32", model_path), ("int8", out)):
        with OrtEngine(path, max_batch=36) as engine:
            engine.infer(36)
            times = []
            for _ in range(5):
                t = time.perf_counter()
                engine.infer(36)
                times.append(time.perf_counter() - t)
            timings[name] = float(np.median(times))
    return {"agreement": round(report.agreement, 4), "accepted": report.agreement >= 0.95, "held_out_masked_images": report.held_out_images,
            "batch36_fp32_ms": round(timings["fp32"] * 1e3, 1), "batch36_int8_ms": round(timings["int8"] * 1e3, 1),
            "speedup": round(timings["fp32"] / timings["int8"], 2)}


def demo_metrics(pc, workdir: Path) -> dict:
    """The demo's patched segment, lossless and as cameras compress it: how often the patch fools the plain model,
    the share of frames at the patch level, and how often the defended label is still one of the cup's classes."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bm_alarm import sequences

    from pcedge.evaluation.demo import AVOID

    workdir.mkdir(parents=True, exist_ok=True)
    out = {}
    with tempfile.TemporaryDirectory(dir=workdir) as scratch:
        for name, (threat, frames) in sequences(pc, Path(scratch), 1).items():
            if threat != "inside" or "demo clip" not in name or not frames:
                continue
            results = [pc.predict(f) for f in frames]
            out[name] = {"frames": len(frames),
                         "undefended_fooled_rate": round(float(np.mean([pc.predict_undefended(f) not in AVOID for f in frames])), 3),
                         "patch_level_rate": round(sum(r.level == "patch" for r in results) / len(frames), 3),
                         "defended_label_cup_rate": round(sum(r.label in AVOID for r in results) / len(frames), 3)}
    return out


def evaluate(args: argparse.Namespace) -> None:
    from pcedge.evaluation.bench import camera_frames
    from pcedge.runtime.driver import PatchCleanser
    from pcedge.util.machine import machine_info

    teacher = ROOT / "demo_out" / "efficientnet_lite0.onnx"
    students = args.student or [WORK / "lite0_distilled.onnx"]
    missing = [str(path) for path in students if not path.is_file()]
    if missing:
        raise SystemExit(f"not found: {', '.join(missing)} (run 'train' first)")
    unseen = camera_frames(48)
    later = {"vtest.avi frames 600-794 (every 4th)": frames_of(OPENCV_DATA / "vtest.avi", 600, None, 4),
             "tree.avi frames 48-67": frames_of(OPENCV_DATA / "tree.avi", 48, None, 1)}
    calibration = frames_of(WORK / "train_pans_opencv.avi", 0, None, 16)
    report = {"machine": machine_info(), "training": {path.stem: json.loads(_metadata(path)["pcedge.training"]) for path in students},
              "models": {}}
    for name, path in [("teacher", teacher)] + [(path.stem, path) for path in students]:
        row = {}
        with PatchCleanser.from_onnx(path, backend="ort") as pc:
            row["unseen_scenes"] = clean_metrics(pc, unseen)
            row["later_in_time"] = {label: clean_metrics(pc, frames) for label, frames in later.items()}
            row["labelled_photos"] = labelled_metrics(pc, path)
            row["demo_patched_segment"] = demo_metrics(pc, WORK)
        row["int8"] = int8_metrics(path, calibration, unseen[::4], WORK)
        report["models"][name] = row
        print(name, json.dumps(row, indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))


def markdown(report: dict) -> str:
    """The before/after table RESULTS.md quotes, from evaluate's report."""
    models = report["models"]
    names = list(models)
    rows = [("| | " + " | ".join(names) + " |"), "|---|" + "---:|" * len(names)]

    def add(label: str, pick) -> None:
        rows.append(f"| {label} | " + " | ".join(str(pick(models[n])) for n in names) + " |")

    for title, get in [("unseen scenes", lambda m: m["unseen_scenes"])] + [
            (f"later: {k}", (lambda k: lambda m: m["later_in_time"][k])(k)) for k in next(iter(models.values()))["later_in_time"]]:
        add(f"{title}: uncertain or patch", lambda m, g=get: f"{g(m)['uncertain_or_patch_rate']:.1%} of {g(m)['frames']}")
        add(f"{title}: two-mask images / frame", lambda m, g=get: g(m)["two_mask_images_per_frame"])
        add(f"{title}: mean latency / undefended batch-K", lambda m, g=get: f"{g(m)['latency_ratio']:.2f}x ({g(m)['mean_latency_ms']:.0f} ms)")
    for key in ("clean_accuracy", "defended_accuracy", "certified_accuracy"):
        add(f"20 labelled photos: {key.replace('_', ' ')}",
            lambda m, k=key: f"{m['labelled_photos'][k]} [{m['labelled_photos'][k + '_ci95'][0]:.2f}, {m['labelled_photos'][k + '_ci95'][1]:.2f}]")
    add("INT8 agreement with FP32 (held-out masked images)", lambda m: f"{m['int8']['agreement']:.1%} ({'accepted' if m['int8']['accepted'] else 'refused'})")
    add("INT8 batch-36 speed-up", lambda m: f"{m['int8']['speedup']:.2f}x")
    for seg in next(iter(models.values()))["demo_patched_segment"]:
        add(f"{seg}: undefended fooled / patch level / defended cup",
            lambda m, s=seg: "{undefended_fooled_rate:.0%} / {patch_level_rate:.0%} / {defended_label_cup_rate:.0%}".format(**m["demo_patched_segment"][s]))
    return "\n".join(rows)


def table(args: argparse.Namespace) -> None:
    print(markdown(json.loads(args.json.read_text())))


def _metadata(path: Path) -> dict[str, str]:
    from pcedge.runtime.modelfile import read_onnx_metadata

    return read_onnx_metadata(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="phase", required=True)
    sub.add_parser("prepare", help="write the training clips")
    t = sub.add_parser("train", help="run pcedge finetune --unlabeled on them")
    t.add_argument("--minutes", type=float, default=35.0)
    t.add_argument("--steps", type=int, default=5000)
    t.add_argument("--validate-every", type=int, default=25)
    t.add_argument("--lr", type=float, default=5e-5)
    t.add_argument("--unmasked-weight", type=float, default=1.0)
    t.add_argument("--batch-size", type=int, default=24)
    t.add_argument("--pseudo-label-weight", type=float, default=1.0)
    t.add_argument("--pseudo-label-confidence", type=float, default=0.0, help="0.5: the gated run of RESULTS.md (with --lr 3e-5)")
    t.add_argument("--patience", type=int, default=6)
    t.add_argument("--resume", action="store_true")
    e = sub.add_parser("evaluate", help="before and after, on footage the training never saw")
    e.add_argument("--json", type=Path)
    e.add_argument("--student", type=Path, action="append", help="a distilled model (repeatable; default: train's output)")
    m = sub.add_parser("table", help="the Markdown table of an evaluate --json report")
    m.add_argument("json", type=Path)
    args = parser.parse_args()
    {"prepare": prepare, "train": train, "evaluate": evaluate, "table": table}[args.phase](args)


if __name__ == "__main__":
    main()
