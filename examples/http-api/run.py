"""Start a small geo API on 127.0.0.1, then run the job against it.

python examples/http-api/run.py [--set key=value ...]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

CENTRES = {"DE": (51.1, 10.4), "FR": (46.2, 2.2), "US": (37.1, -95.7), "JP": (36.2, 138.3)}


class GeoHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        query = parse_qs(urlparse(self.path).query)
        country = query.get("country", [""])[0].upper()
        lat, lon = CENTRES.get(country, (0.0, 0.0))
        body = json.dumps({"lat": lat, "lon": lon}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


def main() -> int:
    server = ThreadingHTTPServer(("127.0.0.1", 0), GeoHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {**os.environ, "GEO_API_URL": f"http://127.0.0.1:{server.server_address[1]}"}
    job = Path(__file__).with_name("job.yaml")
    cmd = [sys.executable, "-m", "shardflow.cli.main", "run", str(job), *sys.argv[1:]]
    try:
        return subprocess.call(cmd, env=env)
    finally:
        server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
