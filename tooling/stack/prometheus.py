"""Debian's Prometheus on loopback, scraping Caliber's metrics ports.

For tests and a local look at the dashboards' queries: the package is installed when
missing, the configuration is generated (JSON, which Prometheus reads as YAML), and the
server keeps its data in a folder of the caller's choosing.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from tooling.stack.apt import ensure_packages
from tooling.stack.process import StackError, wait_until

BINARY = "prometheus"
PACKAGES = ["prometheus"]


@dataclass(frozen=True, slots=True)
class ScrapeJob:
    name: str
    target: str
    """``host:port`` of the /metrics endpoint."""
    metrics_path: str = "/metrics"
    bearer_token: str | None = None


def scrape_config(jobs: list[ScrapeJob], interval_s: float) -> dict[str, Any]:
    interval = f"{max(int(interval_s * 1000), 100)}ms"
    configs: list[dict[str, Any]] = []
    for job in jobs:
        entry: dict[str, Any] = {
            "job_name": job.name,
            "metrics_path": job.metrics_path,
            "static_configs": [{"targets": [job.target]}],
        }
        if job.bearer_token is not None:
            entry["authorization"] = {"type": "Bearer", "credentials": job.bearer_token}
        configs.append(entry)
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": configs,
    }


class PrometheusServer:
    """One Prometheus process; ``with`` starts it and stops it (SIGTERM) at the end."""

    def __init__(
        self, data_dir: Path, port: int, jobs: list[ScrapeJob], interval_s: float = 1.0
    ) -> None:
        self.data_dir = data_dir
        self.port = port
        self.jobs = jobs
        self.interval_s = interval_s
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.data_dir / "prometheus.log"

    def start(self, timeout: float = 30.0) -> None:
        ensure_packages(BINARY, PACKAGES)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "prometheus.yml"
        config.write_text(json.dumps(scrape_config(self.jobs, self.interval_s), indent=2))
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(
                [
                    BINARY,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        proc = self._proc
        try:
            wait_until(self._ready, timeout, "prometheus", self.log, lambda: proc.poll() is None)
        except StackError:
            self.stop()
            raise

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return int(resp.status) == 200
        except (urllib.error.URLError, OSError):
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr`` (``/api/v1/query``): ``metric`` and ``value``."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.loads(resp.read())
        if body.get("status") != "success":
            raise StackError(f"prometheus query {expr!r} failed: {body}")
        return list(body["data"]["result"])

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets with their health (``/api/v1/targets``)."""
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=5) as resp:
            return list(json.loads(resp.read())["data"]["activeTargets"])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s; waits for the process to end."""
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(15)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(15)
        self._proc = None

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
