"""The page at GET / in headless Chromium: for a user, the history and every strategy's list show
the titles the API returns; the screenshot is saved for people (and was looked at)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html import unescape

import pytest

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=15000", "--window-size=1400,1000"]


def _chromium(url: str, profile: str, *extra: str) -> str:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: scripts/setup-env.sh installs Debian's chromium")
    out = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, url], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _cards(dom: str) -> dict[str, list[str]]:
    cards = {}
    for m in re.finditer(r'<div class="card[^"]*" data-strategy="([^"]+)">(.*?)</table></div>', dom, re.S):
        cards[unescape(m.group(1))] = [unescape(t) for t in re.findall(r'<td class="title">(.*?)</td>', m.group(2))]
    return cards


def test_page_shows_each_strategy_for_a_user(served, tmp_path):
    user = served["data"].users()["user_id"].astype(str)[3]
    url = f"{served['url']}/#token={served['token']}&user={user}"
    dom = _chromium(url, str(tmp_path / "p1"), "--dump-dom")
    assert 'data-state="done"' in dom, dom[-3000:]
    cards = _cards(dom)
    strategies = served["client"].get("/v1/strategies").json()["strategies"]
    assert set(cards) == {"history", *strategies}
    for s in strategies:
        api = served["client"].post("/v1/recommend", json={"user_id": user, "k": 10, "strategy": s}).json()
        assert cards[s] == [i["title"] for i in api["items"]], s
    known = served["client"].get(f"/v1/users/{user}").json()
    assert cards["history"] == [h["title"] for h in known["history"]]
    shot = tmp_path / "page.png"
    _chromium(url, str(tmp_path / "p2"), f"--screenshot={shot}")
    assert shot.stat().st_size > 20_000
    keep = os.environ.get("BRIDGEREC_SCREENSHOT_DIR")
    if keep:  # for people: BRIDGEREC_SCREENSHOT_DIR=docs pytest tests/serving/test_page.py
        os.makedirs(keep, exist_ok=True)
        shutil.copy(shot, os.path.join(keep, "serving_page.png"))
