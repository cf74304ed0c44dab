"""The CustomResourceDefinitions, generated from the gateway's pydantic models.

`make crds` (python -m kubellm_operator.crds DIR) writes them to helm/kubellm/crds/; a test
fails when the committed files differ from what this module generates. The models are the
single source of truth for fields, types, defaults and bounds; this module adds what only a
CRD has: names, printer columns, CEL rules for the cross-field rules the models check in
Python, and which fields may not change.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import BaseModel

from kubellm_gateway.resources import (
    API_GROUP,
    PLURALS,
    VERSION,
    AccessPolicySpec,
    APIKeySpec,
    APIKeyStatus,
    LLMModelSpec,
    LLMProviderSpec,
    LLMProviderStatus,
    Status,
)

CATEGORY: Final = "kubellm"

Schema = dict[str, Any]


@dataclass(frozen=True)
class Rule:
    """A CEL rule (x-kubernetes-validations) on the schema node at `path` below the root."""

    path: tuple[str, ...]
    rule: str
    message: str
    field_path: str = ""


@dataclass(frozen=True)
class Kind:
    kind: str
    short_name: str
    spec: type[BaseModel]
    status: type[BaseModel]
    columns: tuple[tuple[str, str, str], ...]  # name, type, JSONPath
    rules: tuple[Rule, ...] = field(default=())

    @property
    def plural(self) -> str:
        return PLURALS[self.kind]


def _condition(type_: str, what: str) -> str:
    return f'.status.conditions[?(@.type=="{type_}")].{what}'


_READY = ("Ready", "string", _condition("Ready", "status"))
_REASON = ("Reason", "string", _condition("Ready", "reason"))
_AGE = ("Age", "date", ".metadata.creationTimestamp")


def _immutable(*path: str) -> Rule:
    """The field may not change once set, nor be added or removed after creation."""
    *parent, name = path
    return Rule(
        tuple(parent),
        f"has(self.{name}) == has(oldSelf.{name}) && (!has(self.{name}) "
        f"|| self.{name} == oldSelf.{name})",
        f"{name} is immutable: create a new resource instead",
        f".{name}",
    )


def _only_with(setting: str, provider_type: str) -> Rule:
    return Rule(
        ("spec",),
        f"!has(self.{setting}) || self.type == '{provider_type}'",
        f"{setting} is only allowed with type {provider_type}",
        f".{setting}",
    )


KINDS: Final = (
    Kind(
        "LLMProvider",
        "llmp",
        LLMProviderSpec,
        LLMProviderStatus,
        (("Type", "string", ".spec.type"), _READY, _REASON, _AGE),
        (
            _only_with("azure", "AzureOpenAI"),
            _only_with("anthropic", "Anthropic"),
            _only_with("mock", "Mock"),
            Rule(
                ("spec",),
                "self.type != 'AzureOpenAI' || has(self.baseURL)",
                "baseURL is required for type AzureOpenAI",
                ".baseURL",
            ),
            Rule(
                ("spec",),
                "self.type != 'AzureOpenAI' || "
                "has(self.apiKeySecretRef) != (has(self.azure) && has(self.azure.entraID))",
                "type AzureOpenAI needs exactly one of apiKeySecretRef or azure.entraID",
                ".apiKeySecretRef",
            ),
            Rule(
                ("spec",),
                "self.type != 'Anthropic' || has(self.apiKeySecretRef)",
                "apiKeySecretRef is required for type Anthropic",
                ".apiKeySecretRef",
            ),
            Rule(
                ("spec",),
                "self.type != 'Mock' || !has(self.apiKeySecretRef)",
                "apiKeySecretRef is not allowed with type Mock",
                ".apiKeySecretRef",
            ),
            Rule(
                ("spec", "azure"),
                "!has(self.discovery) || has(self.entraID)",
                "discovery requires entraID (Resource Manager accepts no API keys)",
                ".discovery",
            ),
            # Another type is another upstream: its models and Secrets would silently change.
            _immutable("spec", "type"),
        ),
    ),
    Kind(
        "LLMModel",
        "llmm",
        LLMModelSpec,
        Status,
        (
            ("Model", "string", ".spec.model"),
            ("Provider", "string", ".spec.backends[0].provider"),
            _READY,
            _REASON,
            _AGE,
        ),
        (
            Rule(
                ("spec", "backends"),
                "self.all(b, !has(b.weight) || b.weight > 0)",
                "every backend weight must be positive",
            ),
        ),
    ),
    Kind(
        "AccessPolicy",
        "ap",
        AccessPolicySpec,
        Status,
        (_READY, _REASON, _AGE),
        (
            Rule(
                ("spec",),
                "(has(self.models) && size(self.models) > 0) || has(self.modelSelector)",
                "give models, modelSelector or both",
                ".models",
            ),
            Rule(
                ("spec", "modelSelector", "matchExpressions", "[]"),
                "self.operator in ['In', 'NotIn'] ? "
                "(has(self.values) && size(self.values) > 0) : "
                "(!has(self.values) || size(self.values) == 0)",
                "values are required for In and NotIn, and must be empty otherwise",
                ".values",
            ),
        ),
    ),
    Kind(
        "APIKey",
        "ak",
        APIKeySpec,
        APIKeyStatus,
        (
            ("User", "string", ".spec.user"),
            ("Prefix", "string", ".status.keyPrefix"),
            ("Expires", "string", ".spec.expiresAt"),
            _READY,
            _REASON,
            _AGE,
        ),
        # The key stands for one principal and lives in one Secret: a new user or Secret
        # is a new key, so it gets a new APIKey (and the old key stops working with it).
        (_immutable("spec", "user"), _immutable("spec", "secretName")),
    ),
)


# --- pydantic JSON schema -> structural OpenAPI v3 ------------------------------------------


def _resolve(node: Any, defs: Mapping[str, Schema]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = _resolve(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        return {**target, **_resolve({k: v for k, v in node.items() if k != "$ref"}, defs)}
    return {key: _resolve(value, defs) for key, value in node.items()}


def _structural(node: Schema, where: str) -> Schema:
    """One schema node in the form the API server accepts, checking every bound is there."""
    node = dict(node)
    options = node.pop("anyOf", None)
    if options is not None and not node.get("x-kubernetes-int-or-string"):
        # Optional[X] is anyOf [X, null]: the field is simply optional in a CRD.
        concrete = [o for o in options if o.get("type") != "null"]
        if len(concrete) != 1:
            raise ValueError(f"{where}: unions other than Optional have no CRD form")
        node = {**concrete[0], **node}
    elif options is not None:
        node["anyOf"] = options
    for key in ("title", "additionalProperties") if "properties" in node else ("title",):
        node.pop(key, None)
    if node.get("default") in (None, [], {}, ""):
        node.pop("default", None)  # absent means the same, and keeps kubectl output small
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if "exclusiveMinimum" in node:  # OpenAPI v3.0 spells it as a flag
        bound = node.pop("exclusiveMinimum")
        if node.get("type") == "integer":
            node["minimum"] = bound + 1
        else:
            node.update(minimum=bound, exclusiveMinimum=True)
    kind = node.get("type")
    if kind == "object" and "properties" in node:
        node["properties"] = {
            name: _structural(child, f"{where}.{name}")
            for name, child in node["properties"].items()
        }
    elif kind == "object" and node.get("additionalProperties") is True:
        node.pop("additionalProperties")
        node["x-kubernetes-preserve-unknown-fields"] = True
    elif kind == "object" and isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = _structural(node["additionalProperties"], f"{where}[*]")
        _require(node, "maxProperties", where)
    elif kind == "array":
        node["items"] = _structural(node["items"], f"{where}[]")
        _require(node, "maxItems", where)
    elif kind == "string" and "enum" not in node and node.get("format") != "date-time":
        _require(node, "maxLength", where)
    elif kind is None and not node.get("x-kubernetes-int-or-string"):
        raise ValueError(f"{where}: no type")
    return node


def _require(node: Schema, bound: str, where: str) -> None:
    if bound not in node:
        raise ValueError(f"{where}: unbounded; give the model field a max_length")


def model_schema(model: type[BaseModel], where: str) -> Schema:
    raw = model.model_json_schema(mode="validation")
    definitions = raw.pop("$defs", {})
    return _structural(_resolve(raw, definitions), where)


def _node(schema: Schema, path: tuple[str, ...]) -> Schema:
    for part in path:
        schema = schema["items"] if part == "[]" else schema["properties"][part]
    return schema


def openapi_schema(kind: Kind) -> Schema:
    root: Schema = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": model_schema(kind.spec, "spec"),
            "status": model_schema(kind.status, "status"),
        },
    }
    for rule in kind.rules:
        entry = {"rule": rule.rule, "message": rule.message}
        if rule.field_path:
            entry["fieldPath"] = rule.field_path
        _node(root, rule.path).setdefault("x-kubernetes-validations", []).append(entry)
    return root


def crd(kind: Kind) -> Schema:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind.plural}.{API_GROUP}"},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.kind.lower(),
                "shortNames": [kind.short_name],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": name, "type": type_, "jsonPath": path}
                        for name, type_, path in kind.columns
                    ],
                    "schema": {"openAPIV3Schema": openapi_schema(kind)},
                }
            ],
        },
    }


def _peering_crd(kind: str, plural: str, scope: str) -> Schema:
    """kopf's peering resource: one operator replica is active, the others stand by."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.kopf.dev"},
        "spec": {
            "group": "kopf.dev",
            "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "status": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                }
                            },
                        }
                    },
                }
            ],
        },
    }


_HEADER = "# Generated by `make crds` from gateway/kubellm_gateway/resources.py: do not edit.\n"


def render() -> dict[str, str]:
    """File name -> YAML text of every CRD the chart installs."""
    files = {
        f"{API_GROUP}_{kind.plural}.yaml": _HEADER + yaml.safe_dump(crd(kind), sort_keys=False)
        for kind in KINDS
    }
    peering = [
        _peering_crd("ClusterKopfPeering", "clusterkopfpeerings", "Cluster"),
        _peering_crd("KopfPeering", "kopfpeerings", "Namespaced"),
    ]
    files["kopf.dev_peerings.yaml"] = _HEADER + yaml.safe_dump_all(peering, sort_keys=False)
    return files


def write(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        path = folder / name
        path.write_text(text)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m kubellm_operator.crds DIR", file=sys.stderr)
        return 2
    for path in write(Path(args[0])):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
