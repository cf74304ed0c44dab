"""Turn the raw loadgen results of a run into medians, paired differences and a markdown report.

Every "added"/ratio figure is computed per round against the baseline measured in the same
round (targets run back to back), then the median is taken over rounds: on a noisy machine
that is steadier than the difference of two medians.
"""

from collections.abc import Callable
from statistics import median
from typing import Any

Run = dict[str, Any]

CPU_RATIO_LIMIT = 2.0
ADDED_P50_LIMIT_MS = 1.0
RSS_LIMIT_MB = 100.0


def _median_of(runs: list[Run], key: str) -> float | None:
    values: list[float] = [run[key] for run in runs if run[key] is not None]
    return median(values) if values else None


def summarize(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per scenario and target. A run's figures are flat keys: rps, p50_ms, p99_ms,
    ttfb_p50_ms, cpu_ms_per_request (None when it completed no request)."""
    by_key = {(run["round"], run["scenario"], run["target"]): run for run in runs}

    def paired(
        mine: list[Run], baseline: str, key: str, combine: Callable[[float, float], float]
    ) -> float | None:
        """Median over rounds of combine(this target's figure, the baseline's in that round)."""
        values = []
        for run in mine:
            base = by_key.get((run["round"], run["scenario"], baseline))
            if base and run[key] is not None and base[key]:
                values.append(combine(run[key], base[key]))
        return median(values) if values else None

    def minus(a: float, b: float) -> float:
        return a - b

    def ratio(a: float, b: float) -> float:
        return a / b

    rows = []
    for scenario in dict.fromkeys(run["scenario"] for run in runs):
        for target in dict.fromkeys(run["target"] for run in runs):
            mine = [run for run in runs if run["scenario"] == scenario and run["target"] == target]
            row: dict[str, Any] = {"scenario": scenario, "target": target, "rounds": len(mine)}
            for key in ("rps", "p50_ms", "p99_ms", "ttfb_p50_ms", "cpu_ms_per_request"):
                row[key] = _median_of(mine, key)
            for key in ("p50_ms", "p99_ms", "ttfb_p50_ms"):
                row[f"added_{key}"] = (
                    paired(mine, "direct", key, minus) if target != "direct" else None
                )
            row["cpu_vs_bare"] = (
                paired(mine, "bare", "cpu_ms_per_request", ratio) if target == "gateway" else None
            )
            row["errors"] = sum(run["errors"] for run in mine)
            rows.append(row)
    return rows


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _mib(value: float) -> float:
    return value / 2**20


def markdown(
    header: str, rows: list[dict[str, Any]], memory: list[dict[str, Any]], streams: int
) -> str:
    lines = [
        header,
        "",
        "| scenario | target | req/s | p50 ms | p99 ms | +p50 ms | +p99 ms "
        "| TTFB p50 ms | +TTFB ms | CPU ms/req | CPU x bare | errors |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        cells = [
            row["scenario"],
            row["target"],
            _fmt(row["rps"], 0),
            _fmt(row["p50_ms"]),
            _fmt(row["p99_ms"]),
            _fmt(row["added_p50_ms"]),
            _fmt(row["added_p99_ms"]),
            _fmt(row["ttfb_p50_ms"]),
            _fmt(row["added_ttfb_p50_ms"]),
            _fmt(row["cpu_ms_per_request"], 3),
            _fmt(row["cpu_vs_bare"]),
            str(row["errors"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if memory:
        lines += [
            "",
            f"Memory with {streams:,} open streams:",
            "",
            "| target | idle RSS MiB | RSS, streams open, MiB | Δ MiB | open at sample | errors |",
            "|---|--:|--:|--:|--:|--:|",
        ]
        for entry in memory:
            idle, held = _mib(entry["idle_rss_bytes"]), _mib(entry["rss_bytes"])
            lines.append(
                f"| {entry['target']} | {idle:.1f} | {held:.1f} | {held - idle:.1f} "
                f"| {entry['open_at_sample']:,} | {entry['errors']} |"
            )
    lines += _target_checks(rows, memory, streams)
    return "\n".join(lines)


def _target_checks(
    rows: list[dict[str, Any]], memory: list[dict[str, Any]], streams: int
) -> list[str]:
    """The issue's pass/fail targets for the gateway, where the run measured what they need."""
    gateway = {row["scenario"]: row for row in rows if row["target"] == "gateway"}
    checks = []
    for scenario in ("c64 plain", "c64 stream"):
        ratio = gateway.get(scenario, {}).get("cpu_vs_bare")
        if ratio is not None:
            verdict = "PASS" if ratio <= CPU_RATIO_LIMIT else "FAIL"
            checks.append(
                f"CPU/request <= {CPU_RATIO_LIMIT:g}x bare, {scenario}: {ratio:.2f}x {verdict}"
            )
    for scenario in ("c1 plain", "c1 stream"):
        added = gateway.get(scenario, {}).get("added_p50_ms")
        if added is not None:
            verdict = "PASS" if added < ADDED_P50_LIMIT_MS else "FAIL"
            checks.append(
                f"added p50 < {ADDED_P50_LIMIT_MS:g} ms, {scenario}: {added:.2f} ms {verdict}"
            )
    for entry in memory:
        if entry["target"] == "gateway":
            held = entry["rss_bytes"]
            if entry["open_at_sample"] < streams:
                verdict = "FAIL (not all streams were open)"
            else:
                # "100 MB" is ambiguous and the gateway sits close to it: judge both readings.
                under_mib, under_mb = _mib(held) < RSS_LIMIT_MB, held / 1e6 < RSS_LIMIT_MB
                verdict = (
                    ("PASS" if under_mb else "FAIL")
                    if under_mib == under_mb
                    else "PASS if MB means MiB, FAIL if 10^6 bytes"
                )
            checks.append(
                f"RSS < {RSS_LIMIT_MB:g} MB with {streams:,} open streams: {_mib(held):.1f} MiB "
                f"= {held / 1e6:.1f} MB ({entry['open_at_sample']:,} open) {verdict}"
            )
    return ["", "Gateway targets:", "", *(f"- {check}" for check in checks)] if checks else []
