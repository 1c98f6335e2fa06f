"""Who may call the served routes: API keys from the config and the `RAYFORMERS_API_KEYS` environment
variable, checked on every request before anything else is read.

Ray Serve has no API-key check of its own for HTTP routes, so every app (and the gateway) checks
`Authorization: Bearer <key>` in its own ASGI stack. Keys are compared in constant time against every
known key, and never appear in a log line, an error, `/info` or the docs. A replica reads the
environment variable of its own process, so a RayService can take keys from a Kubernetes Secret without
them ever being written into its `serveConfigV2`.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from typing import Any

from rayformers.config import api_key_problems
from rayformers.serving.args import HttpArgs
from rayformers.serving.errors import ServingError
from rayformers.serving.page import PUBLIC_FILES

__all__ = ["API_KEYS_ENV", "ApiKeys", "env_keys", "resolve_keys"]

API_KEYS_ENV = "RAYFORMERS_API_KEYS"


def env_keys(environ: Mapping[str, str] | None = None) -> list[str]:
    """The keys in `RAYFORMERS_API_KEYS` (comma-separated; blanks around and between are ignored)."""
    raw = (os.environ if environ is None else environ).get(API_KEYS_ENV, "")
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    problems = api_key_problems(keys, API_KEYS_ENV)
    if problems:
        raise ServingError("; ".join(problems))
    return keys


def resolve_keys(http: HttpArgs, environ: Mapping[str, str] | None = None) -> ApiKeys:
    """The keys a replica accepts: the config's plus its environment's. A build that had keys and a
    replica that finds none is a missing Secret, not an open server: refuse to start."""
    keys = ApiKeys([*http.api_keys, *env_keys(environ)])
    if http.require_api_keys and not keys:
        raise ServingError(
            f"API keys were configured when this app was built, but this replica has none: set "
            f"{API_KEYS_ENV} on every Ray node (for a RayService, from a Kubernetes Secret in the head and "
            "worker containers' env), or put them in serve.api_keys"
        )
    return keys


class ApiKeys:
    """The accepted keys; `allows(authorization)` reads an `Authorization` header's value."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = [k.encode() for k in dict.fromkeys(keys)]

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __repr__(self) -> str:
        return f"ApiKeys({len(self._keys)} keys)"

    def allows(self, authorization: str | bytes | None) -> bool:
        """Whether the header holds `Bearer <one of the keys>`. Every key is compared, in constant
        time, whether or not an earlier one matched."""
        if not authorization:
            return False
        if isinstance(authorization, str):
            authorization = authorization.encode("latin-1", "replace")
        scheme, _, given = authorization.strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        given = given.strip()
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(given, key)
        return matched


def is_open(path: str, open_routes: list[str]) -> bool:
    """Whether `path` is answered without a key: the playground page's static files (they hold no data, and
    a browser fetches them before it has a key; every call the page makes needs one), or one of the routes
    the config left open: exact, or under a prefix ending in `*`, which ends at a path segment:
    `/sentiment*` opens `/sentiment` and `/sentiment/...`, never `/sentiment-internal/...`."""
    if path in PUBLIC_FILES:
        return True
    return any(_under(path, r[:-1]) if r.endswith("*") else path == r for r in open_routes)


def _under(path: str, prefix: str) -> bool:
    if prefix.endswith("/"):
        return path.startswith(prefix) or path == prefix[:-1]
    return path == prefix or path.startswith(prefix + "/")


def full_path(scope: Mapping[str, Any]) -> str:
    """The path the client asked for, with the app's route prefix (Serve's `root_path`)."""
    root, path = scope.get("root_path", "") or "", scope.get("path", "") or ""
    return path if path.startswith(root) else root + path
