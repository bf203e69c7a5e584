"""The viewer in a real browser: Playwright drives the system's chromium (Debian's; .ci/run installs it).

Skipped where chromium or playwright is missing, unless NLA_REQUIRE_BROWSER=1 (CI sets it), which
turns a missing browser into a failure. Screenshots go to $NLA_SCREENSHOT_DIR when set (else a
temporary folder), so a person can look at them.
"""

import json
import os
from pathlib import Path

import pytest

from conftest import build_tiny_nla
from nla.autoencoder.decoding import MAX_NEW_TOKENS
from nla.reading.config import IndexSettings
from nla.reading.document import TRACE_HTML
from nla.reading.index import build_index
from nla.reading.index_store import open_index
from nla.reading.prompt import Prompt
from nla.reading.trace import trace_to_folder
from reading_helpers import FAILED_ANSWER, SCRIPT, TEXT, scripted_reader, serving

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # a live server and a real browser
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 120_000  # a trace on a loaded 2-core CI machine


def missing_browser() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if not CHROMIUM.exists():
        return f"no {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser():
    missing = missing_browser()
    if missing:
        if os.environ.get("NLA_REQUIRE_BROWSER") == "1":
            pytest.fail(missing)
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_llama):
    """The app on a live 127.0.0.1 port, with one saved trace in its traces folder."""
    pytest.importorskip("fastapi")
    from nla.viewer.app import create_app

    root = tmp_path_factory.mktemp("browser")
    patch = pytest.MonkeyPatch()
    patch.setenv("NLA_CACHE_DIR", str(root / "cache"))
    reader = scripted_reader(build_tiny_nla(root / "nla", tiny_llama), tiny_llama)
    (root / "rivers.txt").write_text("Rivers carry water to the sea.")
    saved = trace_to_folder(reader, Prompt.from_file(root / "rivers.txt"), root / "traces" / "rivers",
                            progress=False).document
    (root / "corpus.txt").write_text("Rivers carry water to the sea.\n\nBread rises in a warm oven overnight.")
    build_index(reader, IndexSettings(corpus=str(root / "corpus.txt"), explain="2"), root / "index", progress=False)
    with serving(create_app(reader, root / "traces", index=open_index(root / "index"))) as url:
        yield {"url": url, "reader": reader, "saved": saved, "html": root / "traces" / "rivers" / TRACE_HTML}
    patch.undo()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("NLA_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def open_page(browser, url: str):
    """A page that records every request it makes and every script error it hits."""
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page.set_default_timeout(TIMEOUT_MS)
    page.requests, page.errors = [], []
    page.on("request", lambda request: page.requests.append(request.url))
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    # A refused request shows in the console as a failed load; any other console error is a page error.
    page.on("console", lambda message: message.type == "error" and "Failed to load resource" not in message.text
            and page.errors.append(message.text))
    page.goto(url)
    return page


def test_trace_a_prompt_click_a_token_and_read_its_claims(site, browser, shots):
    from playwright.sync_api import expect

    expected = site["reader"].trace(Prompt(text=TEXT)).document["tokens"]
    page = open_page(browser, site["url"])
    expect(page.locator("#server-meta")).to_contain_text("tiny-nla")
    page.fill("#prompt", TEXT)
    page.click("#trace-button")
    expect(page.locator("#status")).to_contain_text("traced", timeout=TIMEOUT_MS)
    expect(page.locator(".tokens .tok")).to_have_count(len(expected))
    expect(page.locator(".calibration")).to_contain_text("estimated on a built-in sample")

    quoted = next(t for t in expected if t["explanation"] == SCRIPT[0]
                  and all(q["where"] != "later" for c in t["claims"] for q in c["quotes"]))
    page.locator(f'.tokens .tok[data-position="{quoted["position"]}"]').click()
    detail = page.locator(".detail")
    expect(detail.locator("h2")).to_contain_text(f"position {quoted['position']}")
    expect(detail.locator(".badge")).to_have_text(quoted["label"])
    expect(detail.locator(".figures")).to_contain_text(f"score {quoted['score']:.2f}")
    expect(detail.locator(".claim")).to_have_count(len(quoted["claims"]))
    expect(detail.locator(".claim .weight").first).to_contain_text(f"{quoted['claims'][0]['weight']:+.3f}")
    expect(detail.locator("mark.quote.flagged")).to_contain_text(["purple elephants"])
    expect(detail.locator(".tag.flag").last).to_contain_text("possibly confabulated")
    page.screenshot(path=str(shots / "viewer.png"), full_page=True)

    failed = next(t for t in expected if t["status"] == "failed")
    page.locator(f'.tokens .tok[data-position="{failed["position"]}"]').hover()
    expect(detail.locator("h2")).to_contain_text(f"position {quoted['position']}")  # locked: hover does not move it
    page.keyboard.press("Escape")  # unlocks; the next token the mouse enters shows
    page.mouse.move(0, 0)
    page.locator(f'.tokens .tok[data-position="{failed["position"]}"]').hover()
    expect(detail.locator(".failed-note")).to_contain_text(f"cut at the {MAX_NEW_TOKENS}-token cap")
    expect(detail.locator("pre.raw")).to_have_text(FAILED_ANSWER)
    page.screenshot(path=str(shots / "viewer-failed-token.png"))
    assert page.errors == [] and all(u.startswith(site["url"]) for u in page.requests), page.requests
    page.close()


def test_edit_a_tokens_explanation_and_steer_from_the_panel(site, browser, shots):
    from playwright.sync_api import expect

    from nla.reading.steer import SteerSettings, steer

    tokens = site["reader"].trace(Prompt(text=TEXT)).document["tokens"]
    token = next(t for t in tokens if t["status"] == "ok" and not t["sink"])
    edited = "A text about music and songs."
    expected = steer(site["reader"], Prompt(text=TEXT), SteerSettings(alphas=(3.0,), position=token["position"]),
                     explanation=edited)["runs"]
    page = open_page(browser, site["url"])
    page.fill("#prompt", TEXT)
    page.click("#trace-button")
    expect(page.locator("#status")).to_contain_text("traced", timeout=TIMEOUT_MS)
    page.locator(f'.tokens .tok[data-position="{token["position"]}"]').click()
    panel = page.locator(".detail .steer")
    expect(panel.locator("textarea.steer-edit")).to_have_value(token["explanation"])
    panel.locator("textarea.steer-edit").fill(edited)
    panel.locator(".steer-alpha").fill("3")
    panel.locator(".steer-button").click()
    expect(panel.locator(".steer-run")).to_have_count(2, timeout=TIMEOUT_MS)
    expect(panel.locator(".steer-run").first).to_contain_text("before: " + expected[0]["greedy"]["text"])
    expect(panel.locator(".steer-run").last).to_contain_text("after, α 3: " + expected[1]["greedy"]["text"])
    page.screenshot(path=str(shots / "viewer-steer.png"), full_page=True)
    panel.locator(".steer-alpha").fill("99")
    panel.locator(".steer-button").click()
    expect(panel.locator(".steer-out")).to_contain_text("error: --alpha")
    assert page.errors == [] and all(u.startswith(site["url"]) for u in page.requests), page.requests
    page.close()


def test_a_chat_traces_and_a_refused_input_shows_its_error(site, browser):
    from playwright.sync_api import expect

    page = open_page(browser, site["url"])
    page.fill("#prompt", json.dumps([{"role": "user", "content": "Where do rivers go?"}]))
    page.fill("#continue", "3")
    page.click("#trace-button")
    expect(page.locator("#status")).to_contain_text("traced", timeout=TIMEOUT_MS)
    expect(page.locator(".tokens .tok.special").first).to_be_visible()
    expect(page.locator(".tokens .tok.generated").first).to_be_visible()
    page.fill("#prompt", "word " * 600)
    page.click("#trace-button")
    expect(page.locator("#status.error")).to_contain_text("at most 512 are read per request")
    expect(page.locator("#trace-button")).to_be_enabled()
    assert page.errors == []
    page.close()


def test_open_a_saved_trace(site, browser, shots):
    from playwright.sync_api import expect

    page = open_page(browser, site["url"])
    page.get_by_role("button", name="rivers/trace.json").click()
    expect(page.locator("#status")).to_contain_text("opened rivers/trace.json")
    expect(page.locator(".nla-head h1").last).to_contain_text("rivers.txt")
    expect(page.locator(".tokens .tok")).to_have_count(len(site["saved"]["tokens"]))
    page.screenshot(path=str(shots / "viewer-saved.png"), full_page=True)
    assert page.errors == []
    page.close()


def test_trace_html_opens_from_disk_with_no_network(site, browser, shots):
    from playwright.sync_api import expect

    page = open_page(browser, site["html"].as_uri())
    tokens = site["saved"]["tokens"]
    expect(page.locator(".tokens .tok")).to_have_count(len(tokens))
    scored = next(t for t in tokens if t["status"] == "ok")
    page.locator(f'.tokens .tok[data-position="{scored["position"]}"]').click()
    expect(page.locator(".detail .claim")).to_have_count(len(scored["claims"]))
    page.screenshot(path=str(shots / "trace-html.png"), full_page=True)
    assert page.errors == [] and all(u.startswith("file://") for u in page.requests), page.requests
    page.close()


def test_the_api_page_lists_every_endpoint_without_a_cdn(site, browser, shots):
    from playwright.sync_api import expect

    page = open_page(browser, site["url"] + "/api/docs")
    expect(page.locator("section h2")).to_have_count(9)  # eight endpoints (two of them search) and the Message schema
    expect(page.locator("#endpoints")).to_contain_text("/api/trace")
    expect(page.locator("#endpoints")).to_contain_text("continue_tokens")
    expect(page.locator("#endpoints")).to_contain_text("/api/steer")
    page.screenshot(path=str(shots / "api-docs.png"), full_page=True)
    assert page.errors == [] and all(u.startswith(site["url"]) for u in page.requests), page.requests
    page.close()


def test_search_an_index_and_open_a_hits_reading(site, browser, shots):
    from playwright.sync_api import expect

    page = open_page(browser, site["url"] + "/search")
    page.fill("#query", "geography")
    page.click("#search-button")
    expect(page.locator("#status")).to_contain_text("hits", timeout=TIMEOUT_MS)
    rows = page.locator("#hits tr.hit")
    expect(rows.first).to_be_visible()
    expect(rows.first.locator("td.context mark")).to_have_count(1)  # the token, marked in its context
    rows.first.click()
    expect(page.locator("#reading h2")).to_contain_text("position", timeout=TIMEOUT_MS)
    expect(page.locator("#reading .meta")).to_contain_text("score")
    page.screenshot(path=str(shots / "search.png"), full_page=True)
    page.check("#docs")
    page.select_option("#by", "activation")
    page.click("#search-button")
    expect(page.locator("#hits tr.hit")).to_have_count(2, timeout=TIMEOUT_MS)  # the corpus's two documents
    expect(page.locator("#hits tr.hit").first).to_contain_text("pos.")
    page.fill("#query", "")
    page.click("#search-button")
    expect(page.locator("#status")).to_contain_text("Type what to search for")
    assert page.errors == [] and all(u.startswith(site["url"]) for u in page.requests), page.requests
    page.close()
