"""Requests to one model in a loop while the configuration changes, every status kept."""

from __future__ import annotations

import threading
import time

import httpx2

from tests.support.gateway import GatewayProcess

MAX_REQUESTS = 20_000  # bounds the loop whatever the test does


class Traffic:
    def __init__(self, gw: GatewayProcess, model_id: str, key: str) -> None:
        self.gw, self.model_id, self.key = gw, model_id, key
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with httpx2.Client(base_url=self.gw.url, timeout=10) as http:
            while not self._stop.is_set() and len(self.statuses) < MAX_REQUESTS:
                response = http.post(
                    "/v1/chat/completions",
                    headers={"authorization": f"Bearer {self.key}"},
                    json={"model": self.model_id, "messages": [{"role": "user", "content": "x"}]},
                )
                self.statuses.append(response.status_code)
                time.sleep(0.005)  # leaves the gateway room to reload

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def assert_all_served(self) -> None:
        assert self.statuses, "no request ran during the change"
        assert set(self.statuses) == {200}, f"requests failed: {sorted(set(self.statuses))}"
