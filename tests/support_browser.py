"""Headless Chromium for the page tests (Debian's chromium, installed by scripts/setup-env.sh):
the DOM after the page's scripts ran, a screenshot, and the strategy cards of the recommender page."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html import unescape
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=15000", "--window-size=1400,1000"]


def chromium(url: str, profile: str, *extra: str) -> str:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: scripts/setup-env.sh installs Debian's chromium")
    out = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, url], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def cards_of(dom: str) -> dict[str, list[str]]:
    cards = {}
    for m in re.finditer(r'<div class="card[^"]*" data-strategy="([^"]+)">(.*?)</table></div>', dom, re.S):
        cards[unescape(m.group(1))] = [unescape(t) for t in re.findall(r'<td class="title">(.*?)</td>', m.group(2))]
    return cards


def check_page(url: str, token: str, client, prefix: str, user: str, tmp_path: Path,
               keep_screenshot: bool = False) -> dict[str, list[str]]:
    """Open the app's page (at ``url + prefix + "/"``) for ``user`` and check that the history card
    and every available strategy's card show the titles the API returns; take a screenshot (kept
    as serving_page.png in ``BRIDGEREC_SCREENSHOT_DIR`` when set and ``keep_screenshot``). Returns the cards."""
    page = f"{url}{prefix}/#token={token}&user={user}"
    dom = chromium(page, str(tmp_path / "p1"), "--dump-dom")
    assert 'data-state="done"' in dom, dom[-3000:]
    cards = cards_of(dom)
    strategies = client.get(f"{prefix}/v1/strategies").json()["strategies"]
    assert set(cards) == {"history", *strategies}, (set(cards), strategies)
    for s in strategies:
        api = client.post(f"{prefix}/v1/recommend", json={"user_id": user, "k": 10, "strategy": s}).json()
        assert cards[s] == [i["title"] for i in api["items"]], s
    known = client.get(f"{prefix}/v1/users/{user}").json()
    assert cards["history"] == [h["title"] for h in known["history"]]
    shot = tmp_path / "page.png"
    chromium(page, str(tmp_path / "p2"), f"--screenshot={shot}")
    assert shot.stat().st_size > 20_000
    keep = os.environ.get("BRIDGEREC_SCREENSHOT_DIR")
    if keep and keep_screenshot:  # for people: BRIDGEREC_SCREENSHOT_DIR=docs pytest tests/serving/test_llm.py
        os.makedirs(keep, exist_ok=True)
        shutil.copy(shot, os.path.join(keep, "serving_page.png"))
    return cards
