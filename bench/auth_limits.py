"""What identity and limits cost per request, against their baselines in the same run.

    python -m bench.auth_limits [--calls 20000] [--rounds 5]

In-process microbenchmarks of the calls the request pipeline makes, on uvloop like
the gateway:

- authentication, `auth.authenticate()`: an API key (the baseline: one SHA-256 and a
  lookup), an OIDC token already verified (the principal cache), and, for scale, a
  token's first verification (RS256 signature and claims);
- admission, `Limiter.admit()`: a caller no limit applies to (the baseline: a memo
  lookup), the in-process backend, and Redis on loopback (a real redis-server started
  for the run: one EVALSHA round trip); and charging through Redis.

Each figure is the median over rounds of the mean per call; Redis calls are also timed
one by one for p50 / p99. Targets: the cached token adds under 50 µs per request, the
Redis limiter under 0.5 ms at p50. Writes bench/results/auth_limits.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from statistics import median, quantiles
from typing import Any

import jwt
import uvloop
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from bench import processes
from kubellm_gateway.auth import authenticate
from kubellm_gateway.auth.oidc import OIDCSettings, OIDCVerifier
from kubellm_gateway.limits import Limiter, MemoryBackend
from kubellm_gateway.limits.redis import RedisBackend
from kubellm_gateway.providers.pool import ProviderPool
from kubellm_gateway.resources import parse_resource
from kubellm_gateway.routing import Principal, Snapshot, build
from kubellm_gateway.telemetry.metrics import Metrics

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "auth_limits.json"
API_KEY = "sk-kl-bench-" + "k" * 32
AUDIENCE = "kubellm"
Call = Callable[[], Awaitable[Any]]


def _manifests() -> list[dict[str, Any]]:
    kubellm = "kubellm.io/v1alpha1"
    return [
        {"apiVersion": kubellm, "kind": "LLMProvider", "metadata": {"name": "mock"}}
        | {"spec": {"type": "Mock"}},
        {"apiVersion": kubellm, "kind": "LLMModel", "metadata": {"name": "chat"}}
        | {"spec": {"backends": [{"provider": "mock", "model": "m"}]}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bench-key"}}
        | {"stringData": {"apiKey": API_KEY}},
        {"apiVersion": kubellm, "kind": "APIKey", "metadata": {"name": "bench"}}
        | {"spec": {"user": "bench", "groups": ["limited"], "secretName": "bench-key"}},
        {"apiVersion": kubellm, "kind": "AccessPolicy", "metadata": {"name": "open"}}
        | {"spec": {"subjects": [{"kind": "Group", "name": "open"}], "models": ["*"]}},
        {"apiVersion": kubellm, "kind": "AccessPolicy", "metadata": {"name": "limited"}}
        | {
            "spec": {
                "subjects": [{"kind": "Group", "name": "limited"}],
                "models": ["*"],
                # Large enough never to refuse: the benchmark measures admitting.
                "limits": {
                    "requestsPerMinute": 10**12,
                    "tokensPerMinute": 10**12,
                    "tokensPerDay": 10**12,
                    "costPerDay": 10**9,
                },
            }
        },
    ]


def snapshot() -> Snapshot:
    resources = [r for r in map(parse_resource, _manifests()) if r is not None]
    built, _ = build(resources, ProviderPool(), 1)
    return built


class Issuer:
    """A Keycloak-shaped issuer on 127.0.0.1 (discovery and JWKS), in this process."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.port = processes.free_port()
        self.url = f"http://127.0.0.1:{self.port}/realms/bench"
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        jwk = RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True) | {
            "kid": "k1",
            "alg": "RS256",
            "use": "sig",
        }
        discovery = {"issuer": self.url, "jwks_uri": f"{self.url}/protocol/openid-connect/certs"}

        async def document(request: web.Request) -> web.Response:
            certs = request.path.endswith("/certs")
            return web.json_response({"keys": [jwk]} if certs else discovery)

        app = web.Application()
        app.router.add_get("/realms/bench/.well-known/openid-configuration", document)
        app.router.add_get("/realms/bench/protocol/openid-connect/certs", document)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def token(self, user: str) -> str:
        now = int(time.time())
        claims = {
            "iss": self.url,
            "aud": [AUDIENCE, "account"],
            "exp": now + 3600,
            "iat": now,
            "sub": user,
            "preferred_username": user,
            "realm_access": {"roles": ["open", "offline_access"]},
            "groups": ["/acme/research"],
        }
        return jwt.encode(claims, self.key, "RS256", headers={"kid": "k1"})

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def start_redis(workdir: Path) -> tuple[Any, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install -y redis-server)")
    port = processes.free_port()
    process = processes.spawn(
        [
            *(binary, "--port", str(port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", str(workdir)),
        ],
        workdir / "redis.log",
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def scope(credential: str) -> dict[str, Any]:
    return {"type": "http", "headers": [(b"authorization", f"Bearer {credential}".encode())]}


async def per_call(call: Call, calls: int) -> float:
    """Mean microseconds per call over `calls` sequential calls."""
    started = time.perf_counter_ns()
    for _ in range(calls):
        await call()
    return (time.perf_counter_ns() - started) / calls / 1000


async def one_by_one(call: Call, calls: int) -> list[float]:
    """Each call's microseconds."""
    times = []
    for _ in range(calls):
        started = time.perf_counter_ns()
        await call()
        times.append((time.perf_counter_ns() - started) / 1000)
    return times


async def measure(calls: int, rounds: int) -> dict[str, Any]:
    snap = snapshot()
    issuer = Issuer()
    await issuer.start()
    verifier = OIDCVerifier(
        OIDCSettings(
            issuers=(issuer.url,),
            audience=AUDIENCE,
            groups_claims=("groups", "realm_access.roles"),
        )
    )
    workdir = Path(tempfile.mkdtemp(prefix="kubellm-bench-"))
    redis_process, redis_url = start_redis(workdir)
    memory = Limiter(MemoryBackend(), Metrics())
    redis = Limiter(RedisBackend(redis_url), Metrics())
    try:
        key_scope, jwt_scope = scope(API_KEY), scope(issuer.token("alice"))
        fresh_tokens = iter([issuer.token(f"user-{i}") for i in range(rounds * 200 + 1)])
        await authenticate(jwt_scope, snap, verifier)  # keys fetched, principal cached
        await authenticate(scope(next(fresh_tokens)), snap, verifier)
        keyed = await authenticate(key_scope, snap, verifier)  # user "bench", group "limited"
        unlimited = Principal("alice", frozenset({"open"}), auth="oidc")
        admission = await redis.admit(snap, keyed, "chat")

        async def first_verification() -> None:
            await verifier.principal(next(fresh_tokens))

        cases: dict[str, tuple[Call, int]] = {
            "auth: API key": (lambda: authenticate(key_scope, snap, verifier), calls),
            "auth: OIDC token, cached": (lambda: authenticate(jwt_scope, snap, verifier), calls),
            "auth: OIDC token, first verification": (first_verification, 200),
            "admit: no limit applies": (lambda: memory.admit(snap, unlimited, "chat"), calls),
            "admit: in-process backend": (lambda: memory.admit(snap, keyed, "chat"), calls),
            "admit: Redis on loopback": (lambda: redis.admit(snap, keyed, "chat"), calls // 4),
            "charge: Redis on loopback": (lambda: redis.charge(admission, 100, 0.001), calls // 4),
        }
        means: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(rounds):
            for name, (call, n) in cases.items():
                means[name].append(await per_call(call, n))
        latencies = {
            name: await one_by_one(cases[name][0], calls // 4)
            for name in (
                "admit: no limit applies",
                "admit: Redis on loopback",
                "charge: Redis on loopback",
            )
        }
    finally:
        await verifier.aclose()
        await issuer.stop()
        await memory.aclose()
        await redis.aclose()
        processes.stop(redis_process)
        shutil.rmtree(workdir, ignore_errors=True)
    result: dict[str, Any] = {"calls": calls, "rounds": rounds, "cases": {}}
    for name, values in means.items():
        entry: dict[str, Any] = {"mean_us": median(values)}
        if name in latencies:
            cuts = quantiles(latencies[name], n=100)
            entry |= {"p50_us": cuts[49], "p99_us": cuts[98]}
        result["cases"][name] = entry
    return result


def report(result: dict[str, Any]) -> str:
    cases = result["cases"]
    lines = [
        "| call | µs per call (median of means) | p50 µs | p99 µs |",
        "|---|--:|--:|--:|",
    ]
    for name, entry in cases.items():
        p50 = f"{entry['p50_us']:.1f}" if "p50_us" in entry else ""
        p99 = f"{entry['p99_us']:.1f}" if "p99_us" in entry else ""
        lines.append(f"| {name} | {entry['mean_us']:.2f} | {p50} | {p99} |")
    jwt_added = cases["auth: OIDC token, cached"]["mean_us"] - cases["auth: API key"]["mean_us"]
    jwt_total = cases["auth: OIDC token, cached"]["mean_us"]
    redis_added = (
        cases["admit: Redis on loopback"]["p50_us"] - cases["admit: no limit applies"]["p50_us"]
    )
    lines += [
        "",
        f"- cached OIDC token: {jwt_total:.2f} µs per request ({jwt_added:+.2f} µs vs an API "
        f"key); target under 50 µs: {'PASS' if jwt_total < 50 else 'FAIL'}",
        f"- Redis limiter: adds {redis_added:.1f} µs at p50 over no limit; target under 500 µs: "
        f"{'PASS' if redis_added < 500 else 'FAIL'}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per case and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    result = uvloop.run(measure(args.calls, args.rounds))
    RESULTS_PATH.parent.mkdir(exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(result, indent=2))
    print(report(result))


if __name__ == "__main__":
    main()
