"""The figures, written out: ``latest.json``, ``latest.md``, ``latest.png`` and the one-line summary.

``latest.json`` keeps one entry per N; a run replaces the entries of the sizes it measured and keeps the
others, each with the commit and time it was measured at. The headline comparison is the steady shape's local
Parquet path, in-process time (the sync alone); every other shape is compared with its own floor and peer.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import asdict, fields
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.harness import REPO, Measured
from benchmarks.shapes import FLOOR_TARGETS, ONCE, TITLES

HEADLINE = ("local", "parquet")
TARGETS = "at 5M: >= 3x faster than dlt, <= 1.5x the floor's time, peak RSS <= 1.25x the floor's and < 1024 MiB"
_PACKAGES = ("apache-airflow", "duckdb", "pyarrow", "dlt", "moto")
_COLOURS = {"ours": "tab:blue", "dlt": "tab:orange", "floor": "tab:green"}
_STYLES = {"parquet": "-", "csv": "--"}


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    memory_kib = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    versions = {}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024**2, 1),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "versions": versions,
    }


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--", "airflow_cdc_provider") else "")


def find(
    results: list[Measured], runner: str, source: str = "local", fmt: str = "parquet", shape: str = "steady"
) -> Measured | None:
    return next((m for m in results if (m.runner, m.source, m.fmt, m.shape) == (runner, source, fmt, shape)), None)


def of_shape(results: list[Measured], shape: str, runner: str) -> Measured | None:
    """The shape's job of ``runner`` (a shape other than the steady one runs each runner once)."""
    return next((m for m in results if (m.shape, m.runner) == (shape, runner)), None)


def shapes_of(results: list[Measured]) -> list[str]:
    """The shapes measured, other than the steady one, in the order they ran."""
    return list(dict.fromkeys(m.shape for m in results if m.shape != "steady"))


def ratios(results: list[Measured]) -> dict[str, float | None]:
    """The ratios of one N (``None`` where a runner did not run): the steady shape's headline, then for each other
    shape ``<shape>_vs_floor`` (ours / floor time) and ``<shape>_vs_dlt`` (dlt time / ours)."""
    ours, dlt, floor = (find(results, name, *HEADLINE) for name in ("ours", "dlt", "floor"))
    found: dict[str, float | None] = {
        "ours_vs_dlt": dlt.sync_seconds / ours.sync_seconds if ours and dlt else None,
        "ours_vs_floor": ours.sync_seconds / floor.sync_seconds if ours and floor else None,
        "rss_vs_floor": ours.peak_rss_mib / floor.peak_rss_mib if ours and floor else None,
        "peak_rss_mib": ours.peak_rss_mib if ours else None,
        "floor_rss_mib": floor.peak_rss_mib if floor else None,
    }
    for shape in shapes_of(results):
        ours, dlt, floor = (of_shape(results, shape, name) for name in ("ours", "dlt", "floor"))
        found[f"{shape}_vs_floor"] = ours.sync_seconds / floor.sync_seconds if ours and floor else None
        if shape not in ONCE:  # no peer behind the latency proxy
            found[f"{shape}_vs_dlt"] = dlt.sync_seconds / ours.sync_seconds if ours and dlt else None
    return found


def summary_line(rows: int, results: list[Measured]) -> str:
    """``bench N=... ours_vs_dlt=... ours_vs_floor=... peak_rss_mib=... floor_rss_mib=...``, for scripts, then
    ``<shape>_vs_floor=... <shape>_vs_dlt=...`` for each other shape measured."""
    r = ratios(results)

    def show(value: float | None, digits: int) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    shaped = "".join(
        f" {key}={show(value, 2)}" for key, value in r.items() if key.startswith(tuple(shapes_of(results)))
    )
    return (
        f"bench N={rows} ours_vs_dlt={show(r['ours_vs_dlt'], 2)} ours_vs_floor={show(r['ours_vs_floor'], 2)} "
        f"peak_rss_mib={show(r['peak_rss_mib'], 0)} floor_rss_mib={show(r['floor_rss_mib'], 0)}" + shaped
    )


def record(path: Path, rows: int, files: int, seed: int, results: list[Measured]) -> dict[str, Any]:
    """Merge this N's results into the JSON at ``path``; return the whole document."""
    document: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    runs = document.get("runs", {})
    runs[str(rows)] = {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit(),
        "files": files,
        "seed": seed,
        "results": [{**asdict(m), "rows_per_second": m.rows_per_second} for m in results],
        "ratios": ratios(results),
    }
    document = {"machine": machine(), "runs": dict(sorted(runs.items(), key=lambda item: int(item[0])))}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    return document


def results_of(run: dict[str, Any]) -> list[Measured]:
    names = {field.name for field in fields(Measured)}
    return [Measured(**{k: v for k, v in item.items() if k in names}) for item in run["results"]]


def markdown(document: dict[str, Any]) -> str:
    m = document["machine"]
    versions = ", ".join(f"{name} {version}" for name, version in m["versions"].items())
    lines = [
        "# Benchmark figures (latest)",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']}; {versions}.",
        "Change files: N changes over K files, 60% inserts / 30% updates / 10% deletes, fixed seed. "
        "`sync s` is the sync alone, in process (imports excluded), `sync CPU s` its CPU time over all threads "
        "(less sensitive to a busy machine); `wall s` is the whole child process; "
        "peak RSS is the child's `ru_maxrss`. Of `runs` runs, the best time (a busy machine only ever adds time) "
        "and the highest peak RSS are shown; every run's sync time is in latest.json. Ratios compare with the floor "
        "of the same format.",
        "",
        "| N | runner | source | format | sync s | sync CPU s | wall s | changes/s | peak RSS MiB | time / floor "
        "| RSS / floor | runs |",
        "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    headline = ["", "Headline (local Parquet, in-process time); targets " + TARGETS + ":", ""]
    headline += [
        "| N | ours vs dlt (dlt time / ours) | ours vs floor (ours / floor) | our peak RSS MiB | floor peak RSS MiB "
        "| RSS ours / floor | measured at | commit |",
        "|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    shaped = _shape_tables(document)
    for rows, run in document["runs"].items():
        results = [item for item in results_of(run) if item.shape == "steady"]
        for item in results:
            floor = find(results, "floor", "local", item.fmt)
            lines.append(
                f"| {int(rows):,} | {item.runner} | {item.source} | {item.fmt} | {item.sync_seconds:.2f} "
                f"| {item.sync_cpu_seconds:.2f} | {item.wall_seconds:.2f} | {item.rows_per_second:,.0f} "
                f"| {item.peak_rss_mib:.0f} "
                f"| {_ratio(item.sync_seconds, floor.sync_seconds if floor else None)} "
                f"| {_ratio(item.peak_rss_mib, floor.peak_rss_mib if floor else None)} | {item.runs} |"
            )
        r = run["ratios"]
        headline.append(
            f"| {int(rows):,} | {_fmt(r['ours_vs_dlt'])} | {_fmt(r['ours_vs_floor'])} | {_fmt(r['peak_rss_mib'], 0)} "
            f"| {_fmt(r['floor_rss_mib'], 0)} | {_fmt(r['rss_vs_floor'])} | {run['measured_at']} | {run['commit']} |"
        )
    return "\n".join(lines + headline + shaped) + "\n"


def _shape_tables(document: dict[str, Any]) -> list[str]:
    """The other shapes: each against its own floor and peer (dlt at its fastest), and every job's figures."""
    summary = [
        "",
        "Shapes (in-process time; the target is the issue's, ours / floor):",
        "",
        "| N | shape | changes | ours s | ours CPU s | floor s | floor CPU s | dlt s | dlt / ours | ours / floor "
        "| target | measured at |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    jobs = [
        "",
        "| N | shape | runner | source | sync s | sync CPU s | wall s | changes/s | peak RSS MiB | time / floor "
        "| runs |",
        "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    names: dict[str, None] = {}
    for rows, run in document["runs"].items():
        results = results_of(run)
        for shape in shapes_of(results):
            names[shape] = None
            ours, dlt, floor = (of_shape(results, shape, name) for name in ("ours", "dlt", "floor"))
            ratio = ours.sync_seconds / floor.sync_seconds if ours and floor else None
            target = FLOOR_TARGETS.get(shape)
            verdict = (
                "" if target is None or ratio is None else f"<= {target:g}: {'met' if ratio <= target else 'missed'}"
            )
            summary.append(
                f"| {int(rows):,} | {shape} | {_cell(ours or floor, 'rows', 0)} | {_cell(ours, 'sync_seconds', 2)} "
                f"| {_cell(ours, 'sync_cpu_seconds', 2)} | {_cell(floor, 'sync_seconds', 2)} "
                f"| {_cell(floor, 'sync_cpu_seconds', 2)} | {_cell(dlt, 'sync_seconds', 2)} "
                f"| {_fmt(dlt.sync_seconds / ours.sync_seconds if dlt and ours else None)} | {_fmt(ratio)} "
                f"| {verdict} | {run['measured_at']} |"
            )
            for item in (m for m in results if m.shape == shape):
                jobs.append(
                    f"| {int(rows):,} | {shape} | {item.runner} | {item.source} | {item.sync_seconds:.2f} "
                    f"| {item.sync_cpu_seconds:.2f} | {item.wall_seconds:.2f} | {item.rows_per_second:,.0f} "
                    f"| {item.peak_rss_mib:.0f} | {_ratio(item.sync_seconds, floor.sync_seconds if floor else None)} "
                    f"| {item.runs} |"
                )
    if not names:
        return []
    legend = ["", *(f"- `{name}`: {TITLES[name]}" for name in names)]
    return summary + legend + jobs


def compact(document: dict[str, Any]) -> str:
    """The headline figures as one small markdown table (local Parquet), for the project README."""
    lines = [
        "| N | ours s | dlt s | floor s | dlt / ours | ours / floor | ours MiB | dlt MiB | floor MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rows, run in document["runs"].items():
        results = results_of(run)
        ours, dlt, floor = (find(results, name, *HEADLINE) for name in ("ours", "dlt", "floor"))
        r = run["ratios"]
        lines.append(
            f"| {int(rows):,} | {_cell(ours, 'sync_seconds', 2)} | {_cell(dlt, 'sync_seconds', 2)} "
            f"| {_cell(floor, 'sync_seconds', 2)} | {_fmt(r['ours_vs_dlt'])} | {_fmt(r['ours_vs_floor'])} "
            f"| {_cell(ours, 'peak_rss_mib', 0)} | {_cell(dlt, 'peak_rss_mib', 0)} "
            f"| {_cell(floor, 'peak_rss_mib', 0)} |"
        )
    return "\n".join(lines) + "\n"


def plot(document: dict[str, Any], path: Path) -> None:
    """In-process time and peak RSS against N (log scales): a colour per runner, a line style per source/format."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    series: dict[tuple[str, str, str], list[tuple[int, float, float]]] = {}
    for rows, run in document["runs"].items():
        for item in results_of(run):
            if item.shape != "steady":
                continue
            key = (item.runner, item.source, item.fmt)
            series.setdefault(key, []).append((int(rows), item.sync_seconds, item.peak_rss_mib))
    figure, (time_axis, rss_axis) = plt.subplots(1, 2, figsize=(12, 4.8))
    plain = FuncFormatter(lambda value, _: f"{value:,.10g}")
    for (runner, source, fmt), points in sorted(series.items()):
        points.sort()
        look = {"color": _COLOURS.get(runner), "linestyle": ":" if source == "s3" else _STYLES.get(fmt, "-")}
        n = [p[0] for p in points]
        label = f"{runner}/{source}/{fmt}"
        time_axis.plot(n, [p[1] for p in points], marker="o", label=label, **look)
        rss_axis.plot(n, [p[2] for p in points], marker="o", label=label, **look)
    for axis, title, unit in ((time_axis, "sync time, in process", "seconds"), (rss_axis, "peak RSS", "MiB")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.xaxis.set_major_formatter(plain)
        axis.yaxis.set_major_formatter(plain)
        axis.yaxis.set_minor_formatter(plain)
        axis.tick_params(axis="y", which="minor", labelsize=7)
        axis.set_xlabel("changes (N)")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    time_axis.legend(fontsize=8)
    m = document["machine"]
    figure.suptitle(f"airflow-cdc-provider vs dlt vs DuckDB SQL floor ({m['cores']} cores, {m['memory_gib']} GiB)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _cell(m: Measured | None, attribute: str, digits: int) -> str:
    return "n/a" if m is None else f"{getattr(m, attribute):,.{digits}f}"


def _ratio(value: float, reference: float | None) -> str:
    return "" if not reference else f"{value / reference:.2f}"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
