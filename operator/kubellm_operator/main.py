"""`kubellm-operator`: kopf wiring and the command line.

One replica is active at a time (kopf peering through a ClusterKopfPeering, or a KopfPeering
per namespace, named by --peering-name); the others stand by. The operator writes status,
key Secrets and Events; gateway pods only read.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import kopf

from kubellm_gateway.kube_credentials import connection_info, load_config
from kubellm_gateway.resources import API_GROUP, PLURALS, VERSION

from . import apikeys, discovery
from .evaluation import model_ids
from .kubeapi import Cluster
from .reconciler import CLAIMS, INDICES, Reconciler


def _index_body(**kwargs: Any) -> dict[Any, Any]:
    return {(kwargs["namespace"], kwargs["name"]): _plain(kwargs["body"])}


def _index_secret(**kwargs: Any) -> dict[Any, Any]:
    # Only key names, owners and (for minted keys) a digest: no Secret value stays in memory.
    return {(kwargs["namespace"], kwargs["name"]): apikeys.secret_info(_plain(kwargs["body"]))}


def _index_claims(**kwargs: Any) -> dict[Any, Any]:
    key = (kwargs["namespace"], kwargs["name"])
    return {model_id: key for model_id in model_ids(kwargs["body"])}


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """A detached copy: kopf's body views change under us as new events arrive."""

    def copy(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: copy(v) for k, v in value.items()}
        if isinstance(value, list):
            return [copy(v) for v in value]
        return value

    plain: dict[str, Any] = copy(body)
    return plain


def build_registry(reconciler: Reconciler) -> kopf.OperatorRegistry:
    """The operator's handlers on a registry of their own (tests run several side by side)."""
    registry = kopf.OperatorRegistry()
    for kind, plural in PLURALS.items():
        resource = (API_GROUP, VERSION, plural)
        kopf.index(*resource, id=INDICES[kind], registry=registry)(_index_body)
        kopf.on.event(*resource, id=f"reconcile-{plural}", registry=registry)(
            functools.partial(reconciler.on_event, kind)
        )
    models = (API_GROUP, VERSION, PLURALS["LLMModel"])
    kopf.index(*models, id=CLAIMS, registry=registry)(_index_claims)
    kopf.index("v1", "secrets", id=INDICES["Secret"], registry=registry)(_index_secret)
    kopf.on.event("v1", "secrets", id="reconcile-secrets", registry=registry)(
        functools.partial(reconciler.on_event, "Secret")
    )

    discovery.register(registry, reconciler)
    return registry


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubellm-operator",
        description="Reconciles kubellm resources: conditions, API keys, Events.",
    )
    env = os.environ.get
    kubeconfig = env("KUBECONFIG")
    parser.add_argument(
        "--namespace",
        action="append",
        default=[n for n in env("KUBELLM_NAMESPACES", "").split(",") if n],
        help="watch only this namespace (repeatable; default: the whole cluster)",
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=Path(kubeconfig) if kubeconfig else None,
        help="kubeconfig file (default: the pod's service account, else ~/.kube/config)",
    )
    parser.add_argument(
        "--peering-name",
        default=env("KUBELLM_PEERING_NAME", "kubellm"),
        help="kopf peering object shared by the replicas (default: kubellm)",
    )
    parser.add_argument(
        "--standalone",
        action="store_true",
        default=env("KUBELLM_STANDALONE", "") == "true",
        help="no peering: only for a single replica",
    )
    parser.add_argument(
        "--liveness-endpoint",
        default=env("KUBELLM_LIVENESS_ENDPOINT"),
        help="e.g. http://0.0.0.0:8081/healthz for the pod's liveness probe",
    )
    parser.add_argument(
        "--log-level",
        default=env("KUBELLM_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = load_config(args.kubeconfig)
    cluster = Cluster(config)
    registry = build_registry(Reconciler(cluster))
    namespaces = tuple(args.namespace)

    @kopf.on.login(registry=registry)
    def _login(**_: Any) -> kopf.ConnectionInfo:
        # The same credentials the writes use; the service account token is re-read on 401.
        return connection_info(load_config(args.kubeconfig))

    if not args.standalone:

        @kopf.on.startup(registry=registry)
        async def _peering(**_: Any) -> None:
            await cluster.ensure_peering(args.peering_name, namespaces)

    try:
        kopf.run(
            registry=registry,
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=args.standalone,
            peering_name=None if args.standalone else args.peering_name,
            liveness_endpoint=args.liveness_endpoint,
        )
    finally:
        cluster.close()


if __name__ == "__main__":
    main()
