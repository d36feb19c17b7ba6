"""The ``oauth`` key of an HTTP server in the servers file, and the :class:`OAuthSpec` it gives.

An HTTP server needs no ``oauth`` key: on a 401 Lockgate runs the
authorization-code flow with the defaults (a dynamically registered client,
one token for the gateway). The key changes them::

    "notion": {"url": "https://mcp.notion.com/mcp", "oauth": {"per_user": true}}
    "billing": {"url": "https://billing.example/mcp",
                "oauth": {"grant": "client_credentials", "client_id": "lockgate",
                          "client_secret": "${BILLING_SECRET}", "scopes": ["invoices:read"]}}
    "internal": {"url": "http://10.0.0.5/mcp", "oauth": false}

``false`` turns OAuth off for the server (a 401 is then an error);
``true`` is the defaults, written out.
"""

# No `from __future__ import annotations`: pydantic reads the annotations of the shape below.
import re
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, TypeAdapter, ValidationInfo, WrapValidator, with_config
from typing_extensions import TypedDict

from ._config import GRANTS, Grant, OAuthSpec
from ._substitution import expand
from ._validation import Issue, check_part, expected, fail, kind, said, shape

__all__ = ["OAuthKey", "OAuthSettings", "oauth_spec"]

#: RFC 6749, section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


def _scopes(scopes: list[str]) -> list[str]:
    bad = [Issue((index,), "not an OAuth scope: printable ASCII without spaces, quotes or backslashes")
           for index, scope in enumerate(scopes) if not _SCOPE.fullmatch(scope)]
    if bad:
        fail(bad)
    return scopes


def _http_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        fail([Issue((), "expected an http:// or https:// URL with a host")])
    return url


def _metadata_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or parts.path in ("", "/"):
        fail([Issue((), "expected an https:// URL with a path (a Client ID Metadata Document)")])
    return url


_Text = Annotated[str, kind("a string")]
_Secret = Annotated[
    _Text,
    AfterValidator(expand),
    Field(description="The client's secret, for a client registered by hand. ${VAR} and ${VAR:-default} are expanded."),
]


@with_config(shape("OAuth settings"))
class OAuthSettings(TypedDict, total=False):
    """How Lockgate gets an OAuth token for this server when it answers 401."""

    grant: Annotated[
        Grant,
        said(lambda value: f"{value!r} is not a grant: use {' or '.join(GRANTS)}"),
        Field(description="authorization_code: a person logs in (lockgate auth login SERVER). client_credentials: "
              "the gateway asks with client_id and client_secret. Default authorization_code."),
    ]
    client_id: Annotated[
        _Text, AfterValidator(expand),
        Field(description="A client registered by hand. Default: Lockgate registers one (RFC 7591)."),
    ]
    client_secret: _Secret
    scopes: Annotated[
        list[Annotated[str, kind("a string")]],
        kind("an array of strings"),
        AfterValidator(_scopes),
        Field(description="The scopes to ask for. Default: the ones the server's challenge or metadata names."),
    ]
    per_user: Annotated[
        bool, kind("true or false"),
        Field(description="Each Lockgate principal logs in for itself and its calls carry its own token, in a "
              "downstream session of its own (this implies isolation: per_client). Needs authentication on. "
              "Default false: one token serves the gateway."),
    ]
    issuer: Annotated[
        _Text, AfterValidator(expand), AfterValidator(_http_url),
        Field(description="The authorization server the client belongs to (its issuer URL). Default: the one the "
              "server's metadata names."),
    ]
    redirect_port: Annotated[
        int, Field(ge=1, le=65535, description="The loopback port of the redirect URI "
                   "(http://127.0.0.1:PORT/callback), for a client registered with a fixed one. Default: any free port."),
        kind("a port number, 1 to 65535"),
    ]
    client_metadata_url: Annotated[
        _Text, AfterValidator(_metadata_url),
        Field(description="An https:// URL serving Lockgate's client metadata, used as its client id where the "
              "authorization server supports Client ID Metadata Documents."),
    ]


def _together(settings: Mapping[str, Any]) -> Mapping[str, Any]:
    """The rules between keys: client credentials need a client, a secret needs its client."""
    found: list[Issue] = []
    if settings.get("grant") == "client_credentials":
        for key in ("client_id", "client_secret"):
            if key not in settings:
                found.append(Issue((), f"grant client_credentials needs {key!r}"))
        if settings.get("per_user"):
            found.append(Issue(("per_user",), "a client_credentials token is the gateway's own: per_user needs "
                               "grant authorization_code"))
    if "client_secret" in settings and "client_id" not in settings:
        found.append(Issue(("client_secret",), "client_secret needs client_id"))
    if found:
        fail(found)
    return settings


def _oauth(value: object, _handler: Any, info: ValidationInfo) -> Any:
    if isinstance(value, bool):
        return value
    if not isinstance(value, dict):
        fail([Issue((), expected("an object, true or false", value))])
    return _together(check_part(_SETTINGS, value, info))


_SETTINGS: TypeAdapter[OAuthSettings] = TypeAdapter(OAuthSettings)

OAuthKey = Annotated[
    OAuthSettings | bool,
    WrapValidator(_oauth),
    Field(description="OAuth on a 401 (MCP authorization): an object of settings, true for the defaults, false for "
          "none. Default: the authorization-code flow, one token for the gateway."),
]


def oauth_spec(value: Mapping[str, Any] | bool | None) -> OAuthSpec | None:
    """The :class:`OAuthSpec` of a validated ``oauth`` value; ``None`` when the key is absent."""
    if value is None:
        return None
    if isinstance(value, bool):
        return OAuthSpec(enabled=value)
    return OAuthSpec(
        grant=value.get("grant", "authorization_code"),
        client_id=value.get("client_id"),
        client_secret=value.get("client_secret"),
        scopes=tuple(value.get("scopes", ())),
        per_user=value.get("per_user", False),
        issuer=value.get("issuer"),
        redirect_port=value.get("redirect_port"),
        client_metadata_url=value.get("client_metadata_url"),
    )
