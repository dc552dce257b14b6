"""The page at GET / in headless Chromium: for a user, the history and every strategy's list show
the titles the API returns (the app with an LLM is checked the same way in test_llm.py, which
keeps the screenshot for people)."""

from __future__ import annotations

import pytest
from support_browser import check_page

pytestmark = pytest.mark.slow


def test_page_shows_each_strategy_for_a_user(served, tmp_path):
    user = served["data"].users()["user_id"].astype(str)[3]
    cards = check_page(served["url"], served["token"], served["client"], "", user, tmp_path)
    # the stub LLM strategies need an LLM this app lacks; bdlm (added by path) needs none
    assert set(cards) == {"history", "domain", "bdlm"}
