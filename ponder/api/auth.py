"""Bearer tokens and tenants.

Tokens come from `$PONDER_API_KEY` (tenant `default`) and from `api.tokens_file`, a YAML or JSON
mapping of token -> tenant. The service keeps only their SHA-256 digests (they travel in the
Serve deployment's arguments, which Ray's dashboard shows), and compares digests in constant
time. With no token configured there is no auth: every caller is tenant `local`, and `ponder
serve` listens on 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

import yaml

from ponder.config import ApiConfig, ConfigError

ENV_KEY = "PONDER_API_KEY"
DEFAULT_TENANT = "default"
LOCAL_TENANT = "local"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def load_tokens(api: ApiConfig) -> dict[str, str]:
    """digest(token) -> tenant, from the environment and the tokens file."""
    out: dict[str, str] = {}
    key = os.environ.get(ENV_KEY, "").strip()
    if key:
        out[digest(key)] = DEFAULT_TENANT
    if api.tokens_file:
        path = Path(api.tokens_file).expanduser()
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as e:
            raise ConfigError(f"api.tokens_file {path}: {e.strerror or e}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"api.tokens_file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(data, dict) or not data:
            raise ConfigError(f"api.tokens_file {path} must map each token to its tenant")
        for token, tenant in data.items():
            if not isinstance(token, str) or len(token) < 16 or not isinstance(tenant, str) or not tenant:
                raise ConfigError(f"api.tokens_file {path}: each token must be a string of 16 or more characters "
                                  "mapped to a tenant name")
            out[digest(token)] = tenant
    return out


def tenant_of(tokens: dict[str, str], authorization: str | None) -> str | None:
    """The caller's tenant, or None when the header does not carry a valid token."""
    if not tokens:
        return LOCAL_TENANT
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    d = digest(token.strip())
    found = None
    for known, tenant in tokens.items():  # every entry is compared: no early exit on a match
        if hmac.compare_digest(known, d):
            found = tenant
    return found
