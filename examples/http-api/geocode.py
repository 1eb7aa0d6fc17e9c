"""A class handler: one HTTP client per worker, every call under the `geo_api` limit."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

from shardflow import TransientError


class Geocoder:
    def setup(self, ctx: Any) -> None:
        self.base = os.environ.get("GEO_API_URL", "http://127.0.0.1:8765")

    def process(self, record: dict[str, Any], ctx: Any) -> dict[str, Any]:
        # ctx.limited: each call first takes a token of the shared bucket (blocking until
        # one is granted) and is counted in the attempt's api_calls / api_ms metrics
        lookup = ctx.limited("geo_api")(self.lookup)
        try:
            geo = lookup(record["country"])
        except urllib.error.HTTPError as exc:
            if exc.code == 429:
                ctx.report_throttled("geo_api")
                raise TransientError("geo API throttled us") from exc
            raise
        return {"id": record["id"], "country": record["country"], **geo}

    def lookup(self, country: str) -> dict[str, Any]:
        url = f"{self.base}/geo?country={country}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            result: dict[str, Any] = json.load(resp)
        return result

    def teardown(self, ctx: Any) -> None:
        return None
