"""How fast the cluster's changes reach the gateway, and what following them costs.

Three measurements in one run (python -m bench.propagation; bench/README.md):

1. rebuild: routing.build in this process over 10,000 models, 10,000 API keys and
   1,000 policies: seconds per cold build (median and worst of `--builds`), per
   incremental build (a BuildCache primed by the unchanged resources, then one model
   edited, one policy edited or one key added: median of `--builds` each), the snapshot's
   size (tracemalloc) and this process's RSS growth.
2. propagation: a gateway (`--source kubernetes`) follows the Kubernetes emulator
   (tests/support/kube.py, its own process); `--models` LLMModels are created through
   the API at `--rate` per second, and a poller reads /v1/models every `--poll` seconds:
   the time from a create's answer to the first listing that holds the model.
3. churn: request latency (bench.loadgen, 1 client, a Mock model) while nothing changes,
   while `--rate` model edits per second arrive in a namespace the gateway does not
   follow (the control: what the emulator's and the editor's own work costs), while
   they arrive in the one it follows, and the same again with the gateway's background
   threads (the watch among them) moved to a CPU of their own, as a pod with a second
   CPU runs them; back to back, in `--rounds` rounds.

The emulator (a Python stand-in for an API server that runs on other machines) and this
process (the editor) are confined to the last CPU, the gateway and the load generator to
the others, so that the emulator's work is not counted as the gateway's. For the last
window the gateway's threads but its serving one join the emulator's CPU.
"""

import argparse
import contextlib
import gc
import hashlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import httpx2
import yaml
from tests.support import kube

from bench import processes
from bench.procfs import rss_bytes
from kubellm_gateway.collector import Collector
from kubellm_gateway.providers.pool import ProviderPool
from kubellm_gateway.resources import Resource, parse_resource
from kubellm_gateway.routing import BuildCache, build

ROOT = Path(__file__).resolve().parents[1]
CRD_DIR = ROOT / "helm" / "kubellm" / "crds"
KUBELLM = "kubellm.io/v1alpha1"
NAMESPACE = "bench"
UNFOLLOWED = "bench-unfollowed"  # the control's namespace
_ALL_CPUS = os.sched_getaffinity(0)
# (the gateway's and the load generator's CPUs, the emulator's and the editor's)
SERVING_CPUS, CLUSTER_CPUS = (
    (_ALL_CPUS - {max(_ALL_CPUS)}, {max(_ALL_CPUS)}) if len(_ALL_CPUS) > 1 else (None, None)
)
API_KEY = "sk-kl-bench-" + hashlib.sha256(str(time.time_ns()).encode()).hexdigest()[:32]


def _path(kind: str, namespace: str = NAMESPACE) -> str:
    plural = {"LLMProvider": "llmproviders", "LLMModel": "llmmodels"}.get(kind)
    plural = plural or {"AccessPolicy": "accesspolicies", "APIKey": "apikeys"}[kind]
    return f"/apis/kubellm.io/v1alpha1/namespaces/{namespace}/{plural}"


def _model(name: str, group: int, namespace: str = NAMESPACE, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": KUBELLM,
        "kind": "LLMModel",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"tier": f"t{group % 10}", **labels},
        },
        "spec": {
            "model": f"team{group % 100}/{name}",
            "backends": [{"provider": "mock", "model": name}],
        },
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- 1. rebuild ---------------------------------------------------------------------------


def _key(i: int, policies: int) -> dict[str, Any]:
    return {
        "apiVersion": KUBELLM,
        "kind": "APIKey",
        "metadata": {"name": f"k{i}", "namespace": NAMESPACE},
        "spec": {"secretName": f"k{i}", "groups": [f"g{i % policies}", "everyone"]},
        "status": {"keyHash": "sha256:" + hashlib.sha256(f"k{i}".encode()).hexdigest()},
    }


def _policy(i: int, team: int) -> dict[str, Any]:
    # One group, a glob on a team's models and a label selector.
    return {
        "apiVersion": KUBELLM,
        "kind": "AccessPolicy",
        "metadata": {"name": f"p{i}", "namespace": NAMESPACE},
        "spec": {
            "subjects": [{"kind": "Group", "name": f"g{i}"}],
            "models": [f"team{team}/*"],
            "modelSelector": {"matchLabels": {"tier": f"t{i % 10}"}},
        },
    }


def _parsed(doc: dict[str, Any]) -> Resource:
    resource = parse_resource(doc)
    assert resource is not None
    return resource


def cluster_of(models: int, keys: int, policies: int) -> list[Resource]:
    docs: list[dict[str, Any]] = [
        {"apiVersion": KUBELLM, "kind": "LLMProvider",
         "metadata": {"name": "mock", "namespace": NAMESPACE}, "spec": {"type": "Mock"}},
    ]  # fmt: skip
    docs += [_model(f"m{i}", i) for i in range(models)]
    docs += [_key(i, policies) for i in range(keys)]
    docs += [_policy(i, i % 100) for i in range(policies)]
    return [_parsed(doc) for doc in docs]


COLLECTOR = Collector()


def timed_build(resources: list[Resource], pool: ProviderPool, cache: BuildCache | None) -> float:
    with COLLECTOR.paused():  # as Runtime.apply does around every build
        started = time.perf_counter()
        build(resources, pool, 1, keys_from_secrets=False, cache=cache)
        elapsed = time.perf_counter() - started
    COLLECTOR.settle()
    return elapsed


def incremental(resources: list[Resource], pool: ProviderPool, builds: int) -> dict[str, float]:
    """Median seconds of a build after one change, the cache primed by the resources before."""

    def replaced(kind: str, name: str, doc: dict[str, Any]) -> list[Resource]:
        at = next(i for i, r in enumerate(resources) if (r.kind, r.metadata.name) == (kind, name))
        return [*resources[:at], _parsed(doc), *resources[at + 1 :]]

    changes = {
        "model_edited": replaced("LLMModel", "m0", _model("m0", 0, edit="1")),
        "policy_edited": replaced("AccessPolicy", "p0", _policy(0, 1)),
        "key_added": [*resources, _parsed(_key(10_000, 1_000))],
    }
    cache = BuildCache()
    medians = {}
    for change, changed in changes.items():
        times = []
        for _ in range(builds):
            timed_build(resources, pool, cache)  # back to the resources before the change
            times.append(timed_build(changed, pool, cache))
        medians[change] = statistics.median(times)
    return medians


def rebuild(args: argparse.Namespace) -> dict[str, Any]:
    resources = cluster_of(10_000, 10_000, 1_000)
    pool = ProviderPool()
    times = [timed_build(resources, pool, None) for _ in range(args.builds)]
    incremental_s = incremental(resources, pool, args.builds)
    gc.unfreeze()
    gc.collect()
    rss_before = rss_bytes(os.getpid())
    tracemalloc.start()
    snapshot, _ = build(resources, pool, 0, keys_from_secrets=False)
    traced, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = rss_bytes(os.getpid())
    return {
        "models": len(snapshot.models),
        "keys": len(snapshot.keys),
        "policies": len(snapshot.policies),
        "build_s_median": statistics.median(times),
        "build_s_max": max(times),
        "incremental_s_median": incremental_s,
        "snapshot_mib": traced / 2**20,
        "build_peak_mib": peak / 2**20,
        "rss_growth_mib": (rss_after - rss_before) / 2**20,
    }


# --- 2. and 3.: a gateway following the emulator --------------------------------------------


class Cluster:
    """The emulator and a gateway following it, in their own processes."""

    def __init__(self, workdir: Path) -> None:
        kube_port, self.port = processes.free_port(), processes.free_port()
        self.kube_url = f"http://127.0.0.1:{kube_port}"
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "tests.support.kube", str(kube_port)]
        self.kube = processes.spawn(command, workdir / "kube.log", cpus=CLUSTER_CPUS)
        self.api = httpx2.Client(
            base_url=self.kube_url, timeout=10, headers={"authorization": f"Bearer {kube.TOKEN}"}
        )
        self._wait_for_kube()
        self._seed()
        config = kube.write_kubeconfig(self.kube_url, workdir / "kubeconfig", NAMESPACE)
        gateway = [
            *(sys.executable, "-m", "kubellm_gateway.cli", "--source", "kubernetes"),
            *("--kubeconfig", str(config), "--namespaces", NAMESPACE),
            *("--port", str(self.port), "--metrics-port", "0", "--log-level", "warning"),
        ]
        self.gateway = processes.spawn(gateway, workdir / "gateway.log", cpus=SERVING_CPUS)
        processes.wait_ready("gateway", self.gateway, self.port, workdir / "gateway.log", 60)
        self.http = httpx2.Client(
            base_url=self.url, timeout=10, headers={"authorization": f"Bearer {API_KEY}"}
        )

    def _wait_for_kube(self) -> None:
        for _ in range(200):
            try:
                self.api.get("/api")
                return
            except httpx2.TransportError:
                time.sleep(0.05)
        raise RuntimeError("the Kubernetes emulator did not start")

    def _seed(self) -> None:
        for path in sorted(CRD_DIR.glob("*.yaml")):  # the CRD objects, as in a cluster
            for doc in yaml.safe_load_all(path.read_text()):
                self.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", doc)
        self.create(_path("LLMProvider"), {
            "apiVersion": KUBELLM, "kind": "LLMProvider",
            "metadata": {"name": "mock", "namespace": NAMESPACE}, "spec": {"type": "Mock"},
        })  # fmt: skip
        self.create(_path("AccessPolicy"), {
            "apiVersion": KUBELLM, "kind": "AccessPolicy",
            "metadata": {"name": "bench", "namespace": NAMESPACE},
            "spec": {"subjects": [{"kind": "Group", "name": "bench"}], "models": ["*"]},
        })  # fmt: skip
        self.create(_path("APIKey"), {
            "apiVersion": KUBELLM, "kind": "APIKey",
            "metadata": {"name": "bench", "namespace": NAMESPACE},
            "spec": {"secretName": "bench-key", "groups": ["bench"]},
        })  # fmt: skip
        digest = "sha256:" + hashlib.sha256(API_KEY.encode()).hexdigest()
        response = self.api.patch(
            _path("APIKey") + "/bench/status",
            json={"status": {"keyHash": digest}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        response.raise_for_status()

    def create(self, path: str, body: dict[str, Any]) -> None:
        self.api.post(path, json=body).raise_for_status()

    def listed(self) -> set[str]:
        return {m["id"] for m in self.http.get("/v1/models").json()["data"]}

    def stop(self) -> None:
        processes.stop(self.gateway)
        processes.stop(self.kube)


def paced(rate: float, count: int, action: Any) -> None:
    """Call action(i) for i in range(count), `rate` times a second."""
    started = time.monotonic()
    for i in range(count):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        action(i)


def propagation(cluster: Cluster, args: argparse.Namespace) -> dict[str, Any]:
    created: dict[str, float] = {}
    seen: dict[str, float] = {}
    done = threading.Event()

    def poll() -> None:
        deadline = time.monotonic() + args.models / args.rate + 60
        while time.monotonic() < deadline and len(seen) < args.models:
            for model_id in cluster.listed() - seen.keys():
                seen[model_id] = time.monotonic()
            time.sleep(args.poll)
        done.set()

    def create(i: int) -> None:
        model = _model(f"p{i}", i)
        cluster.create(_path("LLMModel"), model)
        created[model["spec"]["model"]] = time.monotonic()

    poller = threading.Thread(target=poll)
    poller.start()
    paced(args.rate, args.models, create)
    poller.join()
    delays = [seen[m] - t for m, t in created.items() if m in seen]
    return {
        "models": args.models,
        "rate_per_s": args.rate,
        "poll_s": args.poll,
        "arrived": len(delays),
        "p50_s": percentile(delays, 0.5),
        "p99_s": percentile(delays, 0.99),
        "max_s": max(delays),
    }


def churn(cluster: Cluster, args: argparse.Namespace) -> dict[str, Any]:
    target = _model("steady", 0)
    cluster.create(_path("LLMModel"), target)
    for i in range(args.models):  # what the control edits
        cluster.create(_path("LLMModel", UNFOLLOWED), _model(f"p{i}", i, UNFOLLOWED))
    while target["spec"]["model"] not in cluster.listed():
        time.sleep(0.05)

    def load() -> dict[str, float]:
        output = processes.run(
            [
                *(sys.executable, "-m", "bench.loadgen", "--url"),
                f"{cluster.url}/v1/chat/completions",
                *("--api-key", API_KEY, "--model", target["spec"]["model"]),
                *("-c", "1", "--warmup", "1", "--duration", str(args.churn_seconds)),
            ],
            timeout=args.churn_seconds + 60,
            cpus=SERVING_CPUS,
        )
        result = json.loads(output)
        if result["errors"]:
            raise RuntimeError(f"{result['errors']} requests failed during churn")
        latency: dict[str, float] = result["latency_ms"]
        return latency

    def background_threads(cpus: set[int] | None) -> None:
        """Every thread of the gateway but the serving loop's (its main thread) onto `cpus`."""
        pid = cluster.gateway.pid
        for task in Path(f"/proc/{pid}/task").iterdir():
            if int(task.name) != pid:
                with contextlib.suppress(ProcessLookupError):  # a thread that just ended
                    os.sched_setaffinity(int(task.name), cpus or _ALL_CPUS)

    def edited(namespace: str) -> tuple[dict[str, float], int]:
        """Latency while `--rate` edits a second arrive in `namespace`, and the edits made."""
        stop = threading.Event()
        edits = 0

        def edit_models() -> None:
            nonlocal edits
            started = time.monotonic()
            while not stop.is_set() and edits < 100_000:
                cluster.api.patch(
                    _path("LLMModel", namespace) + f"/p{edits % args.models}",
                    json={"metadata": {"labels": {"edit": str(edits)}}},
                    headers={"Content-Type": "application/merge-patch+json"},
                ).raise_for_status()
                edits += 1
                delay = started + edits / args.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)

        editor = threading.Thread(target=edit_models)
        editor.start()
        try:
            return load(), edits
        finally:
            stop.set()
            editor.join()

    rounds: list[dict[str, Any]] = []
    for _ in range(args.rounds):
        quiet = load()
        control, _ = edited(UNFOLLOWED)
        busy, edits = edited(NAMESPACE)
        background_threads(CLUSTER_CPUS)
        try:
            spread, more = edited(NAMESPACE)
        finally:
            background_threads(SERVING_CPUS)
        rounds.append({
            "quiet_ms": quiet, "control_ms": control, "churn_ms": busy,
            "churn_spread_ms": spread, "edits": edits + more,
        })  # fmt: skip

    def ratio(window: str) -> dict[str, float]:
        return {
            q: statistics.median(r[window][q] / r["quiet_ms"][q] for r in rounds)
            for q in ("p50", "p99")
        }

    def median_ms(window: str) -> dict[str, float]:
        return {q: statistics.median(r[window][q] for r in rounds) for q in ("p50", "p99")}

    return {
        "edits_per_s": args.rate,
        "edits": sum(r["edits"] for r in rounds),
        "rounds": rounds,
        "cpus": {"serving": sorted(SERVING_CPUS or ()), "cluster": sorted(CLUSTER_CPUS or ())},
        "quiet_ms": median_ms("quiet_ms"),
        "control_ms": median_ms("control_ms"),
        "churn_ms": median_ms("churn_ms"),
        "churn_spread_ms": median_ms("churn_spread_ms"),
        "control_ratio": ratio("control_ms"),
        "ratio": ratio("churn_ms"),
        "spread_ratio": ratio("churn_spread_ms"),
    }


def report(results: dict[str, Any]) -> None:
    r, p, c = results["rebuild"], results["propagation"], results["churn"]
    print(
        f"rebuild   {r['models']} model ids, {r['keys']} keys, {r['policies']} policies: "
        f"median {r['build_s_median'] * 1e3:.0f} ms, max {r['build_s_max'] * 1e3:.0f} ms; "
        f"snapshot {r['snapshot_mib']:.1f} MiB (peak while building "
        f"{r['build_peak_mib']:.1f} MiB), RSS +{r['rss_growth_mib']:.1f} MiB"
    )
    print(
        "incremental "
        + ", ".join(f"{k}: {v * 1e3:.0f} ms" for k, v in r["incremental_s_median"].items())
    )
    print(
        f"propagate {p['arrived']}/{p['models']} models at {p['rate_per_s']:.0f}/s: "
        f"p50 {p['p50_s'] * 1e3:.0f} ms, p99 {p['p99_s'] * 1e3:.0f} ms, "
        f"max {p['max_s'] * 1e3:.0f} ms (poll every {p['poll_s'] * 1e3:.0f} ms)"
    )
    print(
        f"churn     {c['edits']} edits at {c['edits_per_s']:.0f}/s, medians of rounds: p50 "
        f"{c['quiet_ms']['p50']:.2f} -> {c['churn_ms']['p50']:.2f} ms "
        f"(x{c['ratio']['p50']:.2f}), p99 {c['quiet_ms']['p99']:.2f} -> "
        f"{c['churn_ms']['p99']:.2f} ms (x{c['ratio']['p99']:.2f}); control (edits the "
        f"gateway does not follow): p50 x{c['control_ratio']['p50']:.2f}, "
        f"p99 x{c['control_ratio']['p99']:.2f}; CPUs serving {c['cpus']['serving']}, "
        f"cluster {c['cpus']['cluster']}"
    )
    print(
        f"churn, the gateway's background threads on a CPU of their own: p50 "
        f"{c['churn_spread_ms']['p50']:.2f} ms (x{c['spread_ratio']['p50']:.2f}), p99 "
        f"{c['churn_spread_ms']['p99']:.2f} ms (x{c['spread_ratio']['p99']:.2f})"
    )
    checks = [
        ("p99 propagation under 1 s", p["p99_s"] < 1.0),
        ("cold rebuild under 200 ms", r["build_s_median"] < 0.2),
        ("incremental rebuilds under 200 ms", max(r["incremental_s_median"].values()) < 0.2),
        ("latency during churn under 2x, one CPU for everything", max(c["ratio"].values()) < 2),
        ("the same, the watch on a CPU of its own", max(c["spread_ratio"].values()) < 2),
    ]
    for name, ok in checks:
        print(f"{'PASS' if ok else 'MISS'} {name}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.propagation", description=__doc__)
    parser.add_argument("--models", type=int, default=1000, help="models created (propagation)")
    parser.add_argument("--rate", type=float, default=50, help="creates and edits per second")
    parser.add_argument("--poll", type=float, default=0.02, help="seconds between listings")
    parser.add_argument("--builds", type=int, default=5, help="rebuilds timed")
    parser.add_argument("--churn-seconds", type=float, default=10, help="each load window")
    parser.add_argument("--rounds", type=int, default=3, help="churn rounds")
    args = parser.parse_args()
    if CLUSTER_CPUS is not None:
        os.sched_setaffinity(0, CLUSTER_CPUS)  # the editor and the poller: the cluster's side
    results: dict[str, Any] = {"rebuild": rebuild(args)}
    with tempfile.TemporaryDirectory(prefix="kubellm-propagation-") as tmp:
        cluster = Cluster(Path(tmp))
        try:
            results["propagation"] = propagation(cluster, args)
            results["churn"] = churn(cluster, args)
        finally:
            cluster.stop()
    report(results)
    out = ROOT / "bench" / "results" / "propagation.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
