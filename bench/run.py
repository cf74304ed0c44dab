"""Benchmark orchestrator: direct upstream vs bare proxy vs gateway, side by side in one run.

    python -m bench.run [--duration 5] [--rounds 3] [--quick] [--targets direct,bare,gateway]

Starts the fake upstreams, the bare proxy and the gateway on free 127.0.0.1 ports, runs every
scenario against every target in interleaved rounds, then holds N streams open through the
bare proxy and the gateway to read their memory. Prints a markdown report and writes the raw
figures to bench/results/latest.json.
"""

import argparse
import datetime
import importlib.util
import json
import os
import secrets
import shlex
import signal
import string
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from bench import processes, report
from bench.procfs import rss_bytes

ALL_TARGETS = ("direct", "bare", "gateway")
RESULTS_PATH = Path(__file__).resolve().parent / "results" / "latest.json"
REPO_ROOT = Path(__file__).resolve().parent.parent
CHAT_PATH = "/v1/chat/completions"
GATEWAY_MODULE = "kubellm_gateway.cli"
REQUEST_TIMEOUT = 30.0
# The server a target's requests go to, and whose CPU time they cost: the upstream itself
# when going direct.
TARGET_SERVER = {"direct": "upstream", "bare": "bare", "gateway": "gateway"}


@dataclass(frozen=True)
class Scenario:
    name: str
    concurrency: int
    stream: bool


SCENARIOS = (
    Scenario("c1 plain", 1, False),
    Scenario("c1 stream", 1, True),
    Scenario("c64 plain", 64, False),
    Scenario("c64 stream", 64, True),
)

# Two providers: the fast upstream for the load scenarios, the slow one (chunk delay) for the
# open-streams memory scenario. `bench-*` covers both models.
MANIFESTS = string.Template("""\
apiVersion: v1
kind: Secret
metadata: {name: bench-key}
stringData: {apiKey: "$api_key"}
---
apiVersion: kubellm.io/v1alpha1
kind: APIKey
metadata: {name: bench}
spec: {user: bench, groups: [bench], secretName: bench-key}
---
apiVersion: v1
kind: Secret
metadata: {name: upstream-key}
stringData: {apiKey: "upstream-secret"}
---
apiVersion: kubellm.io/v1alpha1
kind: LLMProvider
metadata: {name: upstream}
spec: {type: OpenAI, baseURL: "http://127.0.0.1:$fast_port/v1", apiKeySecretRef: {name: upstream-key, key: apiKey}}
---
apiVersion: kubellm.io/v1alpha1
kind: LLMProvider
metadata: {name: upstream-slow}
spec: {type: OpenAI, baseURL: "http://127.0.0.1:$slow_port/v1", apiKeySecretRef: {name: upstream-key, key: apiKey}}
---
apiVersion: kubellm.io/v1alpha1
kind: LLMModel
metadata: {name: bench-model}
spec: {backends: [{provider: upstream, model: bench-model}]}
---
apiVersion: kubellm.io/v1alpha1
kind: LLMModel
metadata: {name: bench-slow}
spec: {backends: [{provider: upstream-slow, model: bench-slow}]}
---
apiVersion: kubellm.io/v1alpha1
kind: AccessPolicy
metadata: {name: bench}
spec: {subjects: [{kind: Group, name: bench}], models: ["bench-*"]}
""")  # noqa: E501


@dataclass(frozen=True)
class Server:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{CHAT_PATH}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="medians are taken over rounds")
    parser.add_argument("--streams", type=int, default=1000, help="open streams for the RSS test")
    parser.add_argument(
        "--chunk-delay", type=float, default=0.5, help="slow upstream: seconds between chunks"
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 round of 1.5 s, shorter streams: a smoke run"
    )
    parser.add_argument("--targets", default=",".join(ALL_TARGETS), help="comma-separated")
    parser.add_argument(
        "--gateway-cmd",
        help="command starting the gateway (default: this python -m kubellm_gateway.cli); "
        "--manifests, --host, --port and --metrics-port are appended",
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.duration, args.warmup, args.chunk_delay = 1, 1.5, 0.3, 0.25
    args.targets = [name.strip() for name in args.targets.split(",") if name.strip()]
    unknown = set(args.targets) - set(ALL_TARGETS)
    if unknown or not args.targets:
        parser.error(f"--targets takes a subset of {','.join(ALL_TARGETS)}")
    if (
        "gateway" in args.targets
        and not args.gateway_cmd
        and importlib.util.find_spec(GATEWAY_MODULE) is None
    ):
        parser.error("the gateway is not built yet (no kubellm_gateway.cli): --targets direct,bare")
    return args


def start(
    name: str,
    command: list[str],
    port: int,
    logs: Path,
    ready_timeout: float,
    env: dict[str, str] | None = None,
) -> Server:
    log_path = logs / f"{name}.log"
    process = processes.spawn(command, log_path, env)
    processes.wait_ready(name, process, port, log_path, ready_timeout)
    return Server(process, port)


def start_servers(args: argparse.Namespace, workdir: Path, api_key: str) -> dict[str, Server]:
    """The upstreams and the proxies the chosen targets need (the slow ones feed the RSS test)."""
    module = [sys.executable, "-m"]
    port = {
        name: processes.free_port()
        for name in ("fast", "slow", "bare", "bare-slow", "gw", "metrics")
    }
    servers = {}
    for name, key, extra in (
        ("upstream", "fast", []),
        ("upstream-slow", "slow", ["--chunk-delay", str(args.chunk_delay)]),
    ):
        command = [*module, "bench.upstream", "--port", str(port[key]), *extra]
        servers[name] = start(name, command, port[key], workdir, 10)
    if "bare" in args.targets:
        for name, upstream in (("bare", "fast"), ("bare-slow", "slow")):
            command = [*module, "bench.bare_proxy", "--port", str(port[name])]
            command += ["--upstream", f"http://127.0.0.1:{port[upstream]}"]
            servers[name] = start(name, command, port[name], workdir, 10)
    if "gateway" in args.targets:
        manifests = workdir / "manifests"
        manifests.mkdir()
        (manifests / "bench.yaml").write_text(
            MANIFESTS.substitute(api_key=api_key, fast_port=port["fast"], slow_port=port["slow"])
        )
        command = shlex.split(args.gateway_cmd) if args.gateway_cmd else [*module, GATEWAY_MODULE]
        command += ["--manifests", str(manifests), "--host", "127.0.0.1", "--port", str(port["gw"])]
        command += ["--metrics-port", str(port["metrics"])]
        servers["gateway"] = start("gateway", command, port["gw"], workdir, 30)
        check_gateway(servers["gateway"], port["metrics"])
    return servers


def check_gateway(gateway: Server, metrics_port: int) -> None:
    """Refuse to measure a gateway without the auth and metrics the figures are meant to include."""
    request = b'{"model":"bench-model","messages":[{"role":"user","content":"hello"}]}'
    headers = {"Authorization": "Bearer sk-kl-not-a-key", "Content-Type": "application/json"}
    status = processes.http_status(gateway.port, "POST", CHAT_PATH, request, headers)
    if status not in (401, 403):
        raise RuntimeError(f"the gateway answered {status} to an unknown API key: is auth on?")
    status = processes.http_status(metrics_port, "GET", "/metrics")
    if status != 200:
        raise RuntimeError(f"the gateway's metrics port answered {status} to GET /metrics")


def loadgen(arguments: list[str], timeout: float) -> dict[str, Any]:
    output = processes.run([sys.executable, "-m", "bench.loadgen", *arguments], timeout)
    result: dict[str, Any] = json.loads(output)
    return result


def run_scenario(
    args: argparse.Namespace, scenario: Scenario, server: Server, api_key: str
) -> dict[str, Any]:
    """One loadgen run against `server`; `server`'s CPU time per completed request."""
    pid = server.process.pid
    arguments = ["--url", server.url, "--api-key", api_key, "-c", str(scenario.concurrency)]
    arguments += ["--warmup", str(args.warmup), "--duration", str(args.duration)]
    arguments += ["--timeout", str(REQUEST_TIMEOUT), "--cpu-pid", str(pid)]
    if scenario.stream:
        arguments.append("--stream")
    result = loadgen(arguments, timeout=args.warmup + args.duration + REQUEST_TIMEOUT + 15)
    count = result["count"]
    cpu_s = result["cpu_s"].get(str(pid))
    return {
        "concurrency": scenario.concurrency,
        "stream": scenario.stream,
        "count": count,
        "errors": result["errors"],
        "error_samples": result["error_samples"],
        "rps": result["rps"],
        "p50_ms": result["latency_ms"]["p50"],
        "p99_ms": result["latency_ms"]["p99"],
        "ttfb_p50_ms": result["ttfb_ms"]["p50"],
        "ttfb_p99_ms": result["ttfb_ms"]["p99"],
        "cpu_s": cpu_s,
        "cpu_ms_per_request": cpu_s / count * 1e3 if count and cpu_s is not None else None,
    }


def hold_streams(args: argparse.Namespace, server: Server, api_key: str) -> dict[str, Any]:
    """Hold args.streams streams open through `server`: its RSS while they all are."""
    pid = server.process.pid
    idle = rss_bytes(pid)
    # Room for the last stream: the time to open them all, then 19 chunk delays.
    timeout = 20 * args.chunk_delay + REQUEST_TIMEOUT
    arguments = ["--url", server.url, "--api-key", api_key, "--model", "bench-slow"]
    arguments += ["--hold", str(args.streams), "--timeout", str(timeout), "--rss-pid", str(pid)]
    result = loadgen(arguments, timeout=2 * timeout + 15)
    return {
        "idle_rss_bytes": idle,
        "rss_bytes": result["rss_bytes"][str(pid)],
        "opened": result["opened"],
        "open_at_sample": result["open_at_sample"],
        "errors": result["errors"],
        "error_samples": result["error_samples"],
    }


def benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    api_key = f"sk-kl-{secrets.token_hex(16)}"
    servers = start_servers(args, workdir, api_key)
    runs = []
    for round_ in range(args.rounds):
        # Rotate the order each round so no target always runs first (or last) on a machine
        # whose background load drifts.
        shift = round_ % len(args.targets)
        order = args.targets[shift:] + args.targets[:shift]
        for scenario in SCENARIOS:
            for target in order:
                run = run_scenario(args, scenario, servers[TARGET_SERVER[target]], api_key)
                run.update(round=round_, scenario=scenario.name, target=target)
                runs.append(run)
                progress(
                    f"round {round_ + 1}/{args.rounds}  {scenario.name:10} {target:8} "
                    f"{run['rps']:8.0f} req/s  p50 {run['p50_ms'] or 0:.2f} ms  "
                    f"cpu {run['cpu_ms_per_request'] or 0:.3f} ms/req  errors {run['errors']}"
                )
    memory = []
    for target, name in (("bare", "bare-slow"), ("gateway", "gateway")):
        if target in args.targets:
            entry = {"target": target, **hold_streams(args, servers[name], api_key)}
            memory.append(entry)
            progress(
                f"{args.streams} streams via {target}: RSS {entry['rss_bytes'] / 2**20:.1f} MiB "
                f"with {entry['open_at_sample']} open, errors {entry['errors']}"
            )
    return {"runs": runs, "memory": memory}


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _exit_on_sigterm(signum: int, frame: object) -> NoReturn:
    raise SystemExit(128 + signum)  # unwinds through the finally that stops the servers


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    os.chdir(REPO_ROOT)  # children run `python -m bench.…`
    started = datetime.datetime.now(datetime.UTC)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="kubellm-bench-") as workdir:
        try:
            results = benchmark(args, Path(workdir))
        except KeyboardInterrupt:
            raise SystemExit("interrupted") from None
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            raise SystemExit(f"bench failed: {error}") from None
        finally:
            processes.stop_all()
    rows = report.summarize(results["runs"])
    command = shlex.join(["python", "-m", "bench.run", *sys.argv[1:]])
    header = (
        f"kubellm bench, {started:%Y-%m-%d %H:%M} UTC, `{command}`: {os.cpu_count()} CPUs, "
        f"load avg {load_before[0]:.2f} before / {os.getloadavg()[0]:.2f} after; "
        f"medians of {args.rounds} round(s) of {args.duration:g} s; "
        "+ columns: paired difference to direct in the same round."
    )
    RESULTS_PATH.parent.mkdir(exist_ok=True)
    RESULTS_PATH.write_text(
        json.dumps(
            {
                "started": started.isoformat(),
                "command": command,
                "cpus": os.cpu_count(),
                "config": vars(args),
                "summary": rows,
                **results,
            },
            indent=2,
        )
        + "\n"
    )
    print(report.markdown(header, rows, results["memory"], args.streams))


if __name__ == "__main__":
    main()
