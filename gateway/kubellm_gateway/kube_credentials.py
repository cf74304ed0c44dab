"""Credentials for the Kubernetes API as the official client reads them (the pod's service
account, or a kubeconfig with its tokens, certificates and exec plugins), and the same
credentials handed to kopf, which watches with a client of its own.

The kubernetes client is heavy to import: the gateway imports this module only when
kopf's own kubeconfig reader cannot log in (exec plugins); the operator always does.
"""

from __future__ import annotations

import os
from pathlib import Path

import kopf
import kubernetes


def load_config(kubeconfig: Path | None = None) -> kubernetes.client.Configuration:
    """In-cluster service account inside a pod, else the kubeconfig (KUBECONFIG or ~/.kube)."""
    config = kubernetes.client.Configuration()
    if kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ:
        kubernetes.config.load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
    else:
        # Named when given: the client reads $KUBECONFIG only when it is first imported.
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig) if kubeconfig else None, client_configuration=config
        )
    return config


def connection_info(
    config: kubernetes.client.Configuration, default_namespace: str | None = None
) -> kopf.ConnectionInfo:
    """What `config` authenticates with, for kopf's login handler: a client certificate, or
    the Authorization header the client would send, split into scheme and token (Bearer
    from a token, an exec plugin or the service account, renewed here when it expires;
    Basic from a kubeconfig's user and password)."""
    header = config.get_api_key_with_prefix("BearerToken")
    scheme, _, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=config.host,
        ca_path=config.ssl_ca_cert,
        insecure=not config.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
        default_namespace=default_namespace,
    )
