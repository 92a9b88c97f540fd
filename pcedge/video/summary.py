"""The end of a run: each stream's summary, the run's, and the tables ``pcedge run`` prints.

One shape for any number of streams: ``streams`` holds one summary per stream; the top level holds the
totals and what the run was (engine, mask set, whether it was interrupted, why it failed). With one stream
its summary's fields are also at the top level, so ``summary["frames"]`` and ``summary["source"]`` read the
same whether a script ran one camera or sixteen.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from ..alarm import LEVELS
from ..result import FRAME_FAILURES
from .streams import Stream


def stream_summary(stream: Stream, extra: dict[str, Any]) -> dict[str, Any]:
    """One stream: its frames, latency, age, levels and alarms, failed frames, source counters, and how it ended."""
    return {"stream": stream.index, "stream_name": stream.name, **stream.stats.as_dict(),
            "alarm_window": stream.alarm.window_text, "alarms_raised": stream.alarm.raised_count,
            "alarm_frames": stream.alarm.active_frames, "source": stream.feed.stats.as_dict(), "end": stream.end or "stopped",
            "live": stream.feed.live, **extra}


def run_summary(streams: Sequence[Stream], model: Any, per_stream_extra: Callable[[Stream], dict[str, Any]], *,
                interrupted: bool, error: str = "") -> dict[str, Any]:
    """The run: every stream's summary, the totals, and why it failed, if it did (exit code 1)."""
    per_stream = [stream_summary(s, per_stream_extra(s)) for s in streams]
    live = [s for s in per_stream if s["live"]]
    files = [s for s in per_stream if not s["live"]]
    summary: dict[str, Any] = {
        "streams": per_stream,
        "frames": sum(s["frames"] for s in per_stream),
        "fps": round(sum(s["fps"] or 0.0 for s in per_stream), 3),
        "failed_frames": {kind: sum(s["failed_frames"][kind] for s in per_stream) for kind in FRAME_FAILURES},
        "engine": model.engine.describe(), "schedule": model.schedule, "masks": len(model.mask_set),
        "threat": model.mask_set.threat.describe(), "interrupted": interrupted,
        "all_live_lost": bool(live) and all(s["end"] == "lost" for s in live),
        "no_file_read": bool(files) and all(s["end"] == "failed" for s in files),
    }
    if error:
        summary["error"] = error
    if len(per_stream) == 1:
        summary = {**summary, **{k: v for k, v in per_stream[0].items() if k not in ("stream", "stream_name")}}
    return summary


def run_failures(summary: dict[str, Any]) -> list[str]:
    """Why the run failed, one line each (exit code 1): every live source lost, no file readable, an engine failure."""
    reasons = []
    if summary["all_live_lost"] or summary["no_file_read"]:
        reasons += [s["source"]["error"] for s in summary["streams"] if s["end"] in ("lost", "failed")]
    if summary.get("error"):
        reasons.append(summary["error"])
    return [r for r in reasons if r]


def format_summary(summary: dict[str, Any]) -> str:
    """The table printed at the end of a one-stream ``pcedge run``."""
    def ms(key: str) -> str:
        value = summary.get(key)
        return "-" if value is None else f"{value:.1f}"

    frames = summary["frames"]
    levels = summary.get("levels", {})
    shares = ", ".join(f"{level} {levels.get(level, 0)} ({100 * levels.get(level, 0) / frames:.0f}%)" if frames else f"{level} 0"
                       for level in LEVELS)
    lines = [
        f"frames processed   {frames}",
        f"latency ms         mean {ms('mean_ms')}  p50 {ms('p50_ms')}  p90 {ms('p90_ms')}  p99 {ms('p99_ms')}",
        f"frame age ms       p50 {ms('age_p50_ms')}  p99 {ms('age_p99_ms')}  (capture to result)",
        f"throughput         {'-' if summary.get('fps') is None else format(summary['fps'], '.1f')} FPS",
        f"frame levels       {shares}",
    ]
    if "alarm_window" in summary:
        lines.append(f"stream alarm       raised {summary.get('alarms_raised', 0)} time(s), active on "
                     f"{summary.get('alarm_frames', 0)} frame(s) (patch on {summary['alarm_window']} frames)")
    lines.append(f"second round       {summary['two_mask_passes']} two-mask images"
                 + (f" ({summary['schedule']})" if summary.get("schedule") else ""))
    failed = summary.get("failed_frames", {})
    if any(failed.values()):
        lines.append("frames, no result  " + ", ".join(f"{kind} {n}" for kind, n in failed.items()))
    source = summary.get("source", {})
    if source:
        lines.append(f"source             read {source.get('read', 0)}, dropped {source.get('dropped', 0)}, "
                     f"unreadable {len(source.get('unreadable', []))}, reconnects {source.get('reconnects', 0)}, "
                     f"stalls {source.get('stalls', 0)}, gaps {source.get('gap_count', 0)}")
        if source.get("error"):
            lines.append(f"source error       {source['error']}")
    if summary.get("output"):
        lines.append(f"output             {summary['output']}")
    if summary.get("sinks"):
        lines.append(f"sinks              {format_sinks(summary['sinks'])}")
    return "\n".join(lines)


def format_sinks(sinks: dict[str, dict[str, Any]]) -> str:
    """``mqtt: dropped 0, failed 0, delivered 12; webhook https://host/…: ...; frame log: switched_off (...)``."""
    return "; ".join(f"{name}: " + ", ".join(f"{k} {v}" for k, v in report.items()) for name, report in sinks.items())


def format_many(summary: dict[str, Any]) -> str:
    """The per-stream table and the totals printed at the end of a multi-stream ``pcedge run``."""
    rows = [f"{'stream':16s} {'frames':>7s} {'FPS':>5s} {'p50 ms':>7s} {'p99 ms':>7s} {'age p50':>7s} {'clear':>6s} {'uncert':>6s} "
            f"{'patch':>6s} {'alarms':>6s} {'no res':>6s} {'dropped':>7s} {'gaps':>5s}  end"]
    for s in summary["streams"]:
        lv, src = s["levels"], s["source"]
        end = s["end"] + (f": {src['error']}" if src["error"] else "")
        rows.append(f"{s['stream_name'][:16]:16s} {s['frames']:7d} {s['fps'] or 0:5.1f} {s['p50_ms'] or 0:7.1f} {s['p99_ms'] or 0:7.1f} "
                    f"{s['age_p50_ms'] or 0:7.1f} {lv['clear']:6d} {lv['uncertain']:6d} {lv['patch']:6d} {s['alarms_raised']:6d} "
                    f"{sum(s['failed_frames'].values()):6d} {src['dropped']:7d} {src['gap_count']:5d}  {end}")
    rows.append(f"{'all streams':16s} {summary['frames']:7d} {summary['fps']:5.1f}   engine {summary['engine']}; "
                f"{summary['masks']} masks ({summary['threat']})")
    if summary.get("sinks"):
        rows.append(f"sinks: {format_sinks(summary['sinks'])}")
    return "\n".join(rows)
