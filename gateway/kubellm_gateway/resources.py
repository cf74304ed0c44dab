"""Pydantic models of kubellm's custom resources (kubellm.io/v1alpha1) and of core/v1 Secret.

Field names are the Kubernetes camelCase names, used directly as attributes, so a manifest,
these models and the generated CRD schema all spell a field the same way. Spec models forbid
unknown fields (a typo must fail loudly, not be ignored); object envelopes ignore unknown
top-level keys the way clients of the Kubernetes API must. Models are frozen because routing
snapshots share them across threads.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, Self, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import ErrorDetails

API_GROUP: Final = "kubellm.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{API_GROUP}/{VERSION}"
# Each kind's plural: its API path, and its CRD's name with the group.
PLURALS: Final[Mapping[str, str]] = {
    "LLMProvider": "llmproviders",
    "LLMModel": "llmmodels",
    "AccessPolicy": "accesspolicies",
    "APIKey": "apikeys",
}
# On the Secrets the operator mints API keys into: it finds them by it, and gateway pods
# ask the API server never to send them.
API_KEY_SECRET_LABEL: Final = f"{API_GROUP}/apikey"


# --- scalar types ---------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|h|m|s)")  # "ms" before "m" on purpose
_DURATION = re.compile(rf"(?:{_DURATION_PART.pattern})+")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | int | float) -> float:
    """Seconds from a number of seconds or a Go-style duration string ("250ms", "1h30m")."""
    if isinstance(value, bool):  # bool is an int; `interval: true` is a mistake, not 1s
        raise ValueError(f"invalid duration {value!r}: expected seconds or a string like '5s'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and _DURATION.fullmatch(text := value.strip()):
        seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))
    else:
        try:  # a quoted bare number ("30") still means seconds
            seconds = float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"invalid duration {value!r}: expected seconds or a string like "
                "'250ms', '5s', '10m', '1h30m'"
            ) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {value!r}: must be a finite, non-negative time")
    return seconds


# Kubernetes has no number-or-string type except int-or-string, so the CRD accepts whole
# seconds or duration strings; plain YAML manifests may also give fractional seconds.
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}
    ),
]


def _matching(pattern: str, max_length: int, what: str) -> AfterValidator:
    """A validator that explains the rule instead of quoting a regex at the user."""
    regex = re.compile(pattern)

    def check(value: str) -> str:
        if len(value) > max_length or not regex.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DATA_KEY = r"[-._a-zA-Z0-9]+"
_MODEL_ID = r"\S+"

DNSSubdomain = Annotated[
    str,
    _matching(
        _SUBDOMAIN,
        253,
        "a lowercase RFC 1123 subdomain (a-z, 0-9, '-' and '.', starting and ending "
        "with a letter or digit, at most 253 characters)",
    ),
    WithJsonSchema({"type": "string", "maxLength": 253, "pattern": f"^{_SUBDOMAIN}$"}),
]
DNSLabel = Annotated[
    str,
    _matching(
        _LABEL,
        63,
        "a lowercase RFC 1123 label (a-z, 0-9 and '-', starting and ending "
        "with a letter or digit, at most 63 characters)",
    ),
    WithJsonSchema({"type": "string", "maxLength": 63, "pattern": f"^{_LABEL}$"}),
]
SecretKey = Annotated[
    str,
    _matching(_DATA_KEY, 253, "a valid Secret key (letters, digits, '-', '_' and '.')"),
    WithJsonSchema({"type": "string", "maxLength": 253, "pattern": f"^{_DATA_KEY}$"}),
]
ModelID = Annotated[
    str,
    _matching(_MODEL_ID, 256, "a valid model id (1 to 256 characters, no whitespace)"),
    WithJsonSchema({"type": "string", "maxLength": 256, "pattern": f"^{_MODEL_ID}$"}),
]
# Every string and list is bounded: the CRD schema inherits the bounds, and the API server
# needs them to cost CEL rules.
NonEmptyStr = Annotated[str, Field(min_length=1, max_length=256)]
LabelValue = Annotated[str, Field(max_length=63)]


def _http_url(value: str) -> str:
    if len(value) > 2048:
        raise ValueError("URL longer than 2048 characters")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http or https URL")
    return value.rstrip("/")  # adapters append paths that start with "/"


HTTPURL = Annotated[
    str,
    AfterValidator(_http_url),
    WithJsonSchema({"type": "string", "maxLength": 2048, "pattern": "^https?://"}),
]


_T = TypeVar("_T")


def _unique(items: list[_T]) -> list[_T]:
    duplicates = sorted({str(item) for item in items if items.count(item) > 1})
    if duplicates:
        raise ValueError(f"duplicate entries: {', '.join(duplicates)}")
    return items


class _FieldErrors(ValueError):
    """Cross-field problems, each tied to the field the user has to change.

    Raised from model validators; ResourceError turns each into its own dotted-path clause.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in problems))
        self.problems = problems


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- metadata, references, status -----------------------------------------------------------


class ObjectMeta(BaseModel):
    """The part of Kubernetes object metadata kubellm reads."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: DNSSubdomain
    namespace: DNSLabel = "default"
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    generation: int | None = None
    uid: str | None = None
    resourceVersion: str | None = None
    creationTimestamp: datetime | None = None


class SecretKeyRef(_Spec):
    """A key of a Secret in the same namespace."""

    name: DNSSubdomain = Field(description="Name of the Secret.")
    key: SecretKey = Field(description="Key inside the Secret's data.")


class Condition(BaseModel):
    """One observation of the object's state, as written by the operator."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: str = Field(max_length=316, description="Accepted, ResolvedRefs or Ready.")
    status: Literal["True", "False", "Unknown"] = Field(description="Whether it holds.")
    reason: str = Field("", max_length=1024, description="Machine-readable CamelCase reason.")
    message: str = Field("", max_length=32768, description="Human-readable detail.")
    lastTransitionTime: datetime | None = Field(None, description="When status last changed.")
    observedGeneration: int | None = Field(
        None, description="metadata.generation the condition was computed from."
    )


class Status(BaseModel):
    """Written by the operator; the gateway never relies on it for routing."""

    model_config = ConfigDict(extra="allow", frozen=True)

    observedGeneration: int | None = Field(
        None, description="metadata.generation the operator last reconciled."
    )
    conditions: list[Condition] = Field(
        [],
        max_length=8,
        description="Current conditions, one per type.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


# --- LLMProvider ----------------------------------------------------------------------------


class ProviderType(StrEnum):
    """The upstream's API."""

    OpenAI = "OpenAI"
    AzureOpenAI = "AzureOpenAI"
    Anthropic = "Anthropic"
    Mock = "Mock"


DEFAULT_BASE_URLS: Final[Mapping[ProviderType, str]] = {
    ProviderType.OpenAI: "https://api.openai.com/v1",
    ProviderType.Anthropic: "https://api.anthropic.com",
}


class EntraID(_Spec):
    """Microsoft Entra ID client credentials (service principal) for Azure."""

    tenantID: NonEmptyStr = Field(description="Directory (tenant) id.")
    clientID: NonEmptyStr = Field(description="Application (client) id.")
    clientSecretRef: SecretKeyRef = Field(description="Secret key holding the client secret.")
    authorityHost: HTTPURL = Field(
        "https://login.microsoftonline.com", description="Entra ID authority (sovereign clouds)."
    )


class AzureDiscovery(_Spec):
    """Lists the account's deployments through Azure Resource Manager."""

    subscriptionID: NonEmptyStr = Field(description="Azure subscription id.")
    resourceGroup: NonEmptyStr = Field(description="Resource group of the account.")
    accountName: NonEmptyStr = Field(description="Azure OpenAI (Cognitive Services) account.")
    interval: Duration = Field(
        "10m", gt=0, validate_default=True, description="How often to list deployments."
    )
    createModels: bool = Field(
        False, description="Create an LLMModel for each discovered deployment."
    )
    armEndpoint: HTTPURL = Field(
        "https://management.azure.com", description="Azure Resource Manager endpoint."
    )


class AzureSettings(_Spec):
    """Settings for type AzureOpenAI."""

    apiVersion: NonEmptyStr = Field("2024-10-21", description="Azure OpenAI api-version.")
    entraID: EntraID | None = Field(
        None, description="Authenticate with Entra ID instead of an API key."
    )
    discovery: AzureDiscovery | None = Field(
        None, description="Discover deployments through Azure Resource Manager."
    )

    @model_validator(mode="after")
    def _discovery_needs_entra_id(self) -> Self:
        if self.discovery is not None and self.entraID is None:
            # Resource Manager accepts only Entra ID tokens, never the account's API key.
            raise _FieldErrors([("discovery", "requires entraID")])
        return self


class AnthropicSettings(_Spec):
    """Settings for type Anthropic."""

    version: NonEmptyStr = Field("2023-06-01", description="anthropic-version header.")
    defaultMaxTokens: int = Field(
        4096,
        ge=1,
        le=1_000_000,
        description="max_tokens sent when an OpenAI-style request has none (Anthropic needs it).",
    )


class MockSettings(_Spec):
    """Settings for type Mock, an in-process upstream for tests and demos."""

    latency: Duration = Field("0s", validate_default=True, description="Time to first token.")
    tokensPerSecond: float = Field(
        0, ge=0, description="Streaming speed; 0 streams as fast as possible."
    )
    text: str | None = Field(
        None,
        max_length=16384,
        description="Fixed reply; by default a deterministic reply derived from the request.",
    )


class Timeouts(_Spec):
    """Upstream timeouts."""

    connect: Duration = Field(
        "5s", gt=0, validate_default=True, description="TCP and TLS connect timeout."
    )
    firstByte: Duration = Field(
        "120s", gt=0, validate_default=True, description="Time allowed until the first byte."
    )
    idle: Duration = Field(
        "60s", gt=0, validate_default=True, description="Longest silence within a response."
    )


class RetrySpec(_Spec):
    """Retries happen only before the first byte has reached the client."""

    attempts: int = Field(
        2, ge=0, le=10, description="Extra attempts after the first, on the same priority."
    )
    initialBackoff: Duration = Field(
        "250ms", validate_default=True, description="Wait before the first retry; doubles."
    )
    maxBackoff: Duration = Field(
        "10s", validate_default=True, description="Upper bound of the wait between retries."
    )

    @model_validator(mode="after")
    def _backoff_order(self) -> Self:
        if self.maxBackoff < self.initialBackoff:
            raise _FieldErrors([("maxBackoff", "must not be less than initialBackoff")])
        return self


class LLMProviderSpec(_Spec):
    """One upstream account; credentials by Secret reference only."""

    type: ProviderType = Field(description="Upstream API: OpenAI, AzureOpenAI, Anthropic, Mock.")
    baseURL: HTTPURL | None = Field(
        None,
        description="Upstream base URL; defaults per type, required for AzureOpenAI "
        "(https://<resource>.openai.azure.com).",
    )
    apiKeySecretRef: SecretKeyRef | None = Field(
        None, description="Secret key holding the API key."
    )
    azure: AzureSettings | None = Field(None, description="Only for type AzureOpenAI.")
    anthropic: AnthropicSettings | None = Field(None, description="Only for type Anthropic.")
    mock: MockSettings | None = Field(None, description="Only for type Mock.")
    timeouts: Timeouts = Field(default_factory=Timeouts, description="Upstream timeouts.")
    retry: RetrySpec = Field(default_factory=RetrySpec, description="Retries on this provider.")

    @property
    def base_url(self) -> str:
        return self.baseURL or DEFAULT_BASE_URLS.get(self.type, "")

    @model_validator(mode="after")
    def _fits_type(self) -> Self:
        problems = [
            (field, f"only allowed with type {owner}, not {self.type}")
            for field, value, owner in (
                ("azure", self.azure, ProviderType.AzureOpenAI),
                ("anthropic", self.anthropic, ProviderType.Anthropic),
                ("mock", self.mock, ProviderType.Mock),
            )
            if value is not None and self.type is not owner
        ]
        has_key = self.apiKeySecretRef is not None
        if self.type is ProviderType.AzureOpenAI:
            if self.baseURL is None:  # each Azure resource has its own host
                problems.append(("baseURL", "required for type AzureOpenAI"))
            if has_key == (self.azure is not None and self.azure.entraID is not None):
                problems.append(
                    (
                        "apiKeySecretRef",
                        "type AzureOpenAI needs exactly one of apiKeySecretRef or azure.entraID",
                    )
                )
        elif self.type is ProviderType.Anthropic and not has_key:
            problems.append(("apiKeySecretRef", "required for type Anthropic"))
        elif self.type is ProviderType.Mock and has_key:
            problems.append(("apiKeySecretRef", "not allowed with type Mock"))
        if problems:
            raise _FieldErrors(problems)
        return self


# --- LLMModel -------------------------------------------------------------------------------


class Capability(StrEnum):
    """An API a model serves."""

    chat = "chat"
    completions = "completions"
    embeddings = "embeddings"


class Backend(_Spec):
    """Where requests for the model go."""

    provider: DNSSubdomain = Field(description="Name of an LLMProvider in the same namespace.")
    model: NonEmptyStr = Field(description="Upstream model name (Azure: the deployment name).")
    weight: int = Field(1, ge=1, le=1000, description="Share of traffic within its priority.")
    priority: int = Field(0, ge=0, le=100, description="Lower is tried first; next on failure.")


class Pricing(_Spec):
    """USD prices, for cost metrics and budgets."""

    inputPerMillion: float = Field(0, ge=0, description="USD per million input tokens.")
    outputPerMillion: float = Field(0, ge=0, description="USD per million output tokens.")


class LLMModelSpec(_Spec):
    """What clients see in /v1/models and send as "model"."""

    model: ModelID | None = Field(None, description="Client-facing id; default metadata.name.")
    aliases: Annotated[list[ModelID], AfterValidator(_unique)] = Field(
        [],
        max_length=32,
        description="Other ids clients may use.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    capabilities: Annotated[list[Capability], AfterValidator(_unique)] = Field(
        [Capability.chat],
        min_length=1,
        max_length=len(Capability),
        description="APIs the upstream serves natively; completions on a chat-only model "
        "are converted to chat.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    backends: list[Backend] = Field(
        min_length=1,
        max_length=32,
        description="Weighted within a priority; the next priority is tried on failure.",
    )
    pricing: Pricing | None = Field(None, description="Prices for cost metrics and budgets.")
    disabled: bool = Field(False, description="Hide the model and refuse requests for it.")


# --- AccessPolicy ---------------------------------------------------------------------------


class Subject(_Spec):
    """Who a policy applies to."""

    kind: Literal["Group", "User", "APIKey"] = Field(description="What name refers to.")
    name: NonEmptyStr = Field(description="Group, user or APIKey name.")


class LabelSelectorRequirement(_Spec):
    """A set-based label requirement."""

    key: NonEmptyStr = Field(description="Label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="How the label's value relates to values."
    )
    values: list[LabelValue] = Field(
        [], max_length=64, description="Values for In and NotIn; empty otherwise."
    )

    @model_validator(mode="after")
    def _values_fit_operator(self) -> Self:
        takes_values = self.operator in ("In", "NotIn")
        if takes_values and not self.values:
            raise _FieldErrors([("values", f"required for operator {self.operator}")])
        if not takes_values and self.values:
            raise _FieldErrors([("values", f"must be empty for operator {self.operator}")])
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        if self.operator == "NotIn":  # a missing label is "not in" any set, as in Kubernetes
            return labels.get(self.key) not in self.values
        return (self.key in labels) == (self.operator == "Exists")


class LabelSelector(_Spec):
    """Kubernetes label selector; all terms must match and an empty selector matches all."""

    matchLabels: dict[str, LabelValue] = Field(
        {}, max_length=64, description="Labels that must be present as given."
    )
    matchExpressions: list[LabelSelectorRequirement] = Field(
        [], max_length=32, description="Set-based requirements."
    )

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.matchLabels.items()) and all(
            requirement.matches(labels) for requirement in self.matchExpressions
        )


class Limits(_Spec):
    """Limits per principal; every matching policy's limits apply."""

    requestsPerMinute: int | None = Field(None, gt=0, description="Requests per minute.")
    tokensPerMinute: int | None = Field(None, gt=0, description="Input+output tokens per minute.")
    tokensPerDay: int | None = Field(None, gt=0, description="Input+output tokens per day (UTC).")
    costPerDay: float | None = Field(None, gt=0, description="USD per day (UTC).")
    costPerMonth: float | None = Field(None, gt=0, description="USD per calendar month (UTC).")


class AccessPolicySpec(_Spec):
    """Grants subjects the use of models; without a matching policy there is no access."""

    subjects: list[Subject] = Field(
        min_length=1, max_length=256, description="Who the policy applies to."
    )
    models: list[NonEmptyStr] = Field(
        [], max_length=256, description='Model ids or fnmatch-style globs ("claude-*").'
    )
    modelSelector: LabelSelector | None = Field(
        None, description="Labels of LLMModels; {} selects every model."
    )
    limits: Limits | None = Field(None, description="Rate and budget limits.")

    @model_validator(mode="after")
    def _grants_something(self) -> Self:
        if not self.models and self.modelSelector is None:
            raise _FieldErrors([("models", "give models, modelSelector or both")])
        return self


# --- APIKey ---------------------------------------------------------------------------------


class APIKeySpec(_Spec):
    """An API key the operator mints into a Secret; only its hash leaves the Secret."""

    user: NonEmptyStr | None = Field(None, description="User the key acts as; default the name.")
    groups: list[NonEmptyStr] = Field(
        [], max_length=64, description="Groups the key is a member of."
    )
    expiresAt: AwareDatetime | None = Field(
        None, description='Expiry with a time zone, e.g. "2027-01-01T00:00:00Z".'
    )
    disabled: bool = Field(False, description="Refuse the key without deleting it.")
    secretName: DNSSubdomain = Field(description="Secret the operator writes the key to.")


class LLMProviderStatus(Status):
    """LLMProvider status, written by the operator."""

    discoveredDeployments: list[dict[str, Any]] = Field(
        [], max_length=1024, description="Deployments found through Azure Resource Manager."
    )


class APIKeyStatus(Status):
    """APIKey status; the key itself lives only in the Secret."""

    keyHash: str | None = Field(
        None,
        max_length=71,
        pattern=r"^sha256:[0-9a-f]{64}$",
        description='"sha256:" and the hex key digest.',
    )
    keyPrefix: str | None = Field(
        None, max_length=16, description="First characters of the key, to recognize it."
    )
    rotation: str | None = Field(
        None,
        max_length=256,
        description="The kubellm.io/rotate annotation value the current key was minted for.",
    )


# --- objects --------------------------------------------------------------------------------


class _Object(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    metadata: ObjectMeta


class LLMProvider(_Object):
    """One upstream account."""

    apiVersion: Literal["kubellm.io/v1alpha1"]
    kind: Literal["LLMProvider"]
    spec: LLMProviderSpec
    status: LLMProviderStatus = Field(default_factory=LLMProviderStatus)


class LLMModel(_Object):
    """A model id clients can request, and the backends that serve it."""

    apiVersion: Literal["kubellm.io/v1alpha1"]
    kind: Literal["LLMModel"]
    spec: LLMModelSpec
    status: Status = Field(default_factory=Status)

    @property
    def model_id(self) -> str:
        return self.spec.model or self.metadata.name


class AccessPolicy(_Object):
    """Which principals may use which models, within which limits."""

    apiVersion: Literal["kubellm.io/v1alpha1"]
    kind: Literal["AccessPolicy"]
    spec: AccessPolicySpec
    status: Status = Field(default_factory=Status)


class APIKey(_Object):
    """An API key for a user and its groups."""

    apiVersion: Literal["kubellm.io/v1alpha1"]
    kind: Literal["APIKey"]
    spec: APIKeySpec
    status: APIKeyStatus = Field(default_factory=APIKeyStatus)

    @property
    def user(self) -> str:
        return self.spec.user or self.metadata.name


def _b64decode(value: str) -> bytes:
    # Go's decoder, which the API server uses, skips line breaks; Python's strict one does not.
    return base64.b64decode(value.replace("\n", "").replace("\r", ""), validate=True)


def _check_base64(value: str) -> str:
    try:
        _b64decode(value)
    except binascii.Error:
        raise ValueError("not valid base64") from None
    return value


class Secret(_Object):
    """Core/v1 Secret, read for credentials and minted API keys."""

    apiVersion: Literal["v1"]
    kind: Literal["Secret"]
    data: dict[str, Annotated[str, AfterValidator(_check_base64)]] = {}
    stringData: dict[str, str] = {}
    type: str = "Opaque"

    def value(self, key: str) -> str | None:
        """The key's text; stringData wins over data, as it does when the API server writes."""
        if key in self.stringData:
            return self.stringData[key]
        if key not in self.data:
            return None
        try:
            return _b64decode(self.data[key]).decode()
        except UnicodeDecodeError:
            meta = self.metadata
            raise ValueError(
                f"Secret {meta.namespace}/{meta.name}: key {key!r} is not UTF-8 text"
            ) from None


Resource = LLMProvider | LLMModel | AccessPolicy | APIKey | Secret

KINDS: Final[Mapping[str, type[LLMProvider | LLMModel | AccessPolicy | APIKey]]] = {
    cls.__name__: cls for cls in (LLMProvider, LLMModel, AccessPolicy, APIKey)
}


# --- parsing --------------------------------------------------------------------------------


class ResourceError(ValueError):
    """A kubellm resource (or Secret) that cannot be used, with every reason at once."""

    def __init__(self, kind: str, namespace: str, name: str, reason: str) -> None:
        super().__init__(f"{kind} {namespace}/{name}: {reason}")
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.reason = reason


def _path(loc: tuple[int | str, ...]) -> str:
    """("spec", "backends", 0, "weight") -> "spec.backends[0].weight"."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


def _clauses(error: ErrorDetails) -> list[str]:
    path = _path(error["loc"])
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, _FieldErrors):
        return [
            f"{path}.{field}: {message}" if path else f"{field}: {message}"
            for field, message in cause.problems
        ]
    # Our own ValueErrors already read well; drop pydantic's "Value error, " prefix.
    message = str(cause) if error["type"] == "value_error" and cause else error["msg"]
    return [f"{path}: {message}" if path else message]


def parse_resource(doc: Mapping[str, Any] | None) -> Resource | None:
    """The resource a manifest or API object describes; None if it is not ours to read.

    Raises ResourceError for a kubellm kind or Secret that does not validate.
    """
    if not isinstance(doc, Mapping) or not doc:
        return None
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    metadata = doc.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    name, namespace = metadata.get("name"), metadata.get("namespace")

    def error(reason: str) -> ResourceError:
        return ResourceError(
            str(kind) if kind else "?",
            namespace if isinstance(namespace, str) and namespace else "default",
            name if isinstance(name, str) and name else "?",
            reason,
        )

    cls: type[Resource]
    if api_version == "v1" and kind == "Secret":
        cls = Secret
    elif api_version == API_VERSION and isinstance(kind, str) and kind in KINDS:
        cls = KINDS[kind]
    elif isinstance(api_version, str) and api_version.startswith(f"{API_GROUP}/"):
        # Our group but nothing we know: a typo that must not be silently ignored.
        if api_version != API_VERSION:
            raise error(f"unsupported apiVersion {api_version!r}, expected {API_VERSION!r}")
        raise error(f"unknown kind {kind!r}, expected one of {', '.join(KINDS)}")
    else:
        return None
    try:
        return cls.model_validate(doc)
    except ValidationError as exc:
        raise error("; ".join(c for e in exc.errors() for c in _clauses(e))) from None


def resource_key(r: Resource) -> tuple[str, str, str]:
    return r.kind, r.metadata.namespace, r.metadata.name
