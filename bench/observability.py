"""What metrics and tracing cost the gateway: three variants side by side in one run.

    python -m bench.observability [--duration 5] [--rounds 3]

- `quiet`: metrics off (`--metrics-port 0`: nothing recorded), tracing off;
- `metrics`: the default (Prometheus on), tracing off;
- `traced`: metrics on, tracing on, exporting by OTLP/HTTP to a local collector stand-in
  that accepts and discards every batch;
- `sampled-10%`, `sampled-1%`: the same, with the standard ratio sampler
  (`OTEL_TRACES_SAMPLER=parentbased_traceidratio`, `OTEL_TRACES_SAMPLER_ARG` 0.1 or 0.01).
Each serves the fast upstream at 64 concurrent clients, plain and streaming, in rotating
rounds. Reported per variant: req/s, p99, CPU per request; and the cost of metrics
(`metrics` vs `quiet`) and of tracing (`traced`, `sampled-*` vs `metrics`) in throughput
and CPU, as medians of per-round ratios. Targets: metrics under 3 %, tracing under 10 % of
throughput.
"""

import argparse
import secrets
import sys
import tempfile
from pathlib import Path
from statistics import median
from typing import Any

from aiohttp import web

from bench import processes
from bench.run import MANIFESTS, SCENARIOS, Server, run_scenario, start
from bench.serving import serve

VARIANTS = ("quiet", "metrics", "traced", "sampled-10%", "sampled-1%")
SAMPLED = {"sampled-10%": "0.1", "sampled-1%": "0.01"}


async def _discard(request: web.BaseRequest) -> web.StreamResponse:
    await request.read()
    return web.Response()


def collector_main(port: int) -> None:
    """The collector stand-in: `python -m bench.observability --collector PORT`."""
    import uvloop  # noqa: PLC0415 - only the collector process needs it

    uvloop.run(serve(_discard, "127.0.0.1", port))


def start_variants(workdir: Path, api_key: str) -> dict[str, Server]:
    module = [sys.executable, "-m"]
    fast, slow, collector = (processes.free_port() for _ in range(3))
    servers = {
        "upstream": start(
            "upstream", [*module, "bench.upstream", "--port", str(fast)], fast, workdir, 10
        ),
        "collector": start(
            "collector",
            [*module, "bench.observability", "--collector", str(collector)],
            collector,
            workdir,
            10,
        ),
    }
    manifests = workdir / "manifests"
    manifests.mkdir()
    (manifests / "bench.yaml").write_text(
        MANIFESTS.substitute(api_key=api_key, fast_port=fast, slow_port=slow)
    )
    for variant in VARIANTS:
        port = processes.free_port()
        metrics = "0" if variant == "quiet" else str(processes.free_port())
        command = [*module, "kubellm_gateway.cli", "--manifests", str(manifests)]
        command += ["--port", str(port), "--metrics-port", metrics]
        env = {}
        if variant == "traced" or variant in SAMPLED:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{collector}"
        if variant in SAMPLED:
            env["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
            env["OTEL_TRACES_SAMPLER_ARG"] = SAMPLED[variant]
        servers[variant] = start(variant, command, port, workdir, 30, env)
    return servers


def report(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| scenario | variant | req/s | p99 ms | CPU ms/req | throughput vs base | CPU vs base |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    baseline = {"metrics": "quiet", "traced": "metrics", **dict.fromkeys(SAMPLED, "metrics")}
    for scenario in dict.fromkeys(r["scenario"] for r in runs):
        for variant in VARIANTS:
            mine = [r for r in runs if r["scenario"] == scenario and r["target"] == variant]
            row = [median(r[k] for r in mine) for k in ("rps", "p99_ms", "cpu_ms_per_request")]
            cost = ["—", "—"]
            if variant in baseline:
                pairs = [
                    (
                        r,
                        next(
                            b
                            for b in runs
                            if b["round"] == r["round"]
                            and b["scenario"] == scenario
                            and b["target"] == baseline[variant]
                        ),
                    )
                    for r in mine
                ]
                drop = median(1 - r["rps"] / b["rps"] for r, b in pairs)
                extra = median(
                    r["cpu_ms_per_request"] / b["cpu_ms_per_request"] - 1 for r, b in pairs
                )
                cost = [f"{-drop:+.1%}", f"{extra:+.1%}"]
            lines.append(
                f"| {scenario} | {variant} | {row[0]:,.0f} | {row[1]:.2f} | {row[2]:.3f} | "
                f"{cost[0]} | {cost[1]} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collector", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.collector:
        collector_main(args.collector)
        return
    api_key = f"sk-kl-{secrets.token_hex(16)}"
    runs = []
    with tempfile.TemporaryDirectory(prefix="kubellm-bench-") as workdir:
        try:
            servers = start_variants(Path(workdir), api_key)
            for round_ in range(args.rounds):
                shift = round_ % len(VARIANTS)
                order = VARIANTS[shift:] + VARIANTS[:shift]
                for scenario in (s for s in SCENARIOS if s.concurrency == 64):
                    for variant in order:
                        run = run_scenario(args, scenario, servers[variant], api_key)
                        run.update(round=round_, scenario=scenario.name, target=variant)
                        runs.append(run)
                        print(
                            f"round {round_ + 1} {scenario.name} {variant}: {run['rps']:.0f} req/s",
                            file=sys.stderr,
                            flush=True,
                        )
        finally:
            processes.stop_all()
    print(report(runs))


if __name__ == "__main__":
    main()
