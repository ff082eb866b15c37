"""The node's web dashboard in a real browser (headless Chromium driven by Selenium) against a real 2-node devnet
(`avadios up` per node: NATS, every service, llama.cpp on the real gemma-3-270m, the ledger with both nodes as
representatives, P2P on 127.0.0.1). Every page loads with no console errors; off loopback (node 2's API listens
on 0.0.0.0) the page asks for the key once and keeps it in sessionStorage; the Overview shows node, services,
models, tier counters, peers and balance; a chat streams tokens before its answer ends and names its tier (1, then
0 for a repeated greedy question, or network with its cost, whose job shows on the Jobs page); a bootstrap peer is
added and removed and a model's route shows each part of the score; AUTOM sent from node 1's Wallet page shows on
both nodes; a narrow window gets a menu; a frozen service and a stopped node are named and the pages keep working.
Voice and Files run once the node serves their APIs (they skip, saying so, while it answers 404).

One devnet and one browser serve the whole module (the tests run in file order; the last one stops node 2);
screenshots go to test-artifacts/dashboard/ (gitignored, or $AVADIOS_TEST_ARTIFACTS).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from avadios import devnet
from tests.helpers import free_port

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("AVADIOS_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "dashboard"
PAGES = ("overview", "chat", "peers", "wallet", "jobs", "files", "voice")
MODEL = "gemma-3-270m-q4_k_m"
FAST = {"ping_interval_s": 1.0, "wallet_auto_receive_s": 1.0, "inference_threads": 2}


def browser_missing() -> str | None:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(path).exists():
            return f"{path} is missing: the browser tests need Debian's {package} (apt-get install {package})"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


@dataclass
class Net:
    one: devnet.DevnetNode
    two: devnet.DevnetNode


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory, default_model: Path) -> Iterator[Net]:
    reason = browser_missing()
    if reason:  # before the devnet starts: no minute spent on nodes no browser will look at
        pytest.skip(reason)
    directory = tmp_path_factory.mktemp("dashnet")
    # Node 1 asks one provider when told to use the network (node 2 is the only other node); node 2's API listens
    # beyond loopback, so it wants its API key, as a node reachable from the LAN does.
    one = devnet.create_node(directory, 1, default_model, [], {**FAST, "network_replicas": 1})
    two = devnet.create_node(directory, 2, default_model, [one.multiaddr], {**FAST, "api_host": "0.0.0.0"})
    devnet.write_genesis(directory, [one, two])
    try:
        devnet.start(one)
        devnet.start(two)
        devnet.wait_healthy([one, two], timeout=240)
        yield Net(one, two)
    finally:
        devnet.stop(one)
        devnet.stop(two)


class Browser:
    """One headless Chromium for the module, with what the tests ask of it."""

    def __init__(self) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        # The fake media flags give the Voice page's Record button a microphone (Chromium's test tone) and say yes
        # to its permission prompt.
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--window-size=1280,800",
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
        ):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.d.set_script_timeout(30)
        # Chromium logs every 4xx/5xx answer of a fetch as a console error, even one the page handles: a test
        # that provokes a refusal names it here (a regular expression), and only those are let through.
        self.expected_refusals: list[str] = []
        self.keys: dict[str, str] = {}  # the API key to give a node's dashboard when it asks, by base URL

    def open(self, base: str, page: str) -> None:
        """Show a page of the dashboard at `base` and wait for its first content."""
        if not self.d.current_url.startswith(base + "/"):
            self.d.get(base + "/")
        self.d.execute_script(
            """document.getElementById('page').removeAttribute('data-ready');
            if (location.hash === arguments[0]) window.dispatchEvent(new HashChangeEvent('hashchange'));
            else location.hash = arguments[0];""",
            "#/" + page,
        )
        if base in self.keys:
            self.give_key_if_asked(base)
        self.wait(
            lambda: self.d.execute_script("return document.getElementById('page').dataset.ready") == page,
            f"the {page} page",
        )

    def give_key_if_asked(self, base: str) -> None:
        """Off loopback the dashboard asks for the key on its first API call; answer it as the user would."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not self.js("return document.getElementById('page').dataset.ready"):
            if self.all("#key-dialog[open]"):
                self.expected_refusals.append(re.escape(base) + r"/\S* - .* status of 401")
                self.css("#key-input").send_keys(self.keys[base])
                self.css("#key-form button[type=submit]").click()
                return
            time.sleep(0.05)

    def wait(self, check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                self.shot(f"timeout-{what.replace(' ', '-')[:40]}")
                pytest.fail(f"not within {timeout:.0f} s: {what}")
            time.sleep(0.1)

    def css(self, selector: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.d.find_element(By.CSS_SELECTOR, selector)

    def all(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.d.find_elements(By.CSS_SELECTOR, selector))

    def text(self, selector: str) -> str:
        # Read in the page in one go: pages re-render their parts every few seconds, so an element found first
        # and read after may already be gone (a stale element).
        script = "const e = document.querySelector(arguments[0]); return e ? e.innerText.trim() : ''"
        return str(self.js(script, selector))

    def js(self, script: str, *args: Any) -> Any:
        return self.d.execute_script(script, *args)

    def confirm(self) -> None:
        self.wait(lambda: self.all("dialog[open] [data-confirm=yes]"), "the confirmation dialog")
        self.css("dialog[open] [data-confirm=yes]").click()

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.d.save_screenshot(str(path))
        return path

    def console_errors(self) -> list[dict[str, Any]]:
        return [
            e
            for e in self.d.get_log("browser")
            if e["level"] == "SEVERE"
            and not (e.get("source") == "network" and any(re.search(r, e["message"]) for r in self.expected_refusals))
        ]

    def quit(self) -> None:
        self.d.quit()


@pytest.fixture(scope="module")
def browser(net: Net) -> Iterator[Browser]:
    b = Browser()
    b.keys[net.two.api_url] = (Path(net.two.home) / "api.key").read_text().strip()
    try:
        yield b
    finally:
        b.quit()


@pytest.fixture
def clean_console(browser: Browser) -> Iterator[Browser]:
    """The test's browser, and after it: nothing was logged to the console as an error."""
    browser.console_errors()  # what earlier tests left is theirs
    browser.expected_refusals = []
    yield browser
    errors = browser.console_errors()
    browser.expected_refusals = []
    assert not errors, f"console errors: {errors}"


def api(node: devnet.DevnetNode, path: str) -> Any:
    return httpx.get(node.api_url + path, timeout=30).json()


def autom_text(micro: int) -> str:
    """Micro-AUTOM as the dashboard writes it: 1,000.5 / 0.000123."""
    whole, fraction = divmod(micro, 1_000_000)
    digits = f"{fraction:06d}".rstrip("0")
    return f"{whole:,}" + (f".{digits}" if digits else "")


def micro(b: Browser, selector: str) -> int:
    value = b.js("const e = document.querySelector(arguments[0]); return e ? e.dataset.micro : null", selector)
    assert value is not None, f"no {selector} on the page"
    return int(value)


def test_every_page_loads_and_says_what_is_missing(net: Net, clean_console: Browser) -> None:
    b = clean_console
    for page in PAGES:
        b.open(net.one.api_url, page)
        b.wait(lambda: not b.all("[aria-busy=true]"), f"the {page} page to finish loading")
        assert b.css("#page-title").text
        assert not b.all("#page .error"), f"{page}: {[e.text for e in b.all('#page .error')]}"
        b.shot(f"page-{page}")
    # A page whose API this node does not serve says so in words (storage and voice come with their services).
    for page, route in (("files", "/api/files"), ("voice", "/v1/audio/transcriptions")):
        if httpx.get(net.one.api_url + "/openapi.json").json()["paths"].get(route) is None:
            b.open(net.one.api_url, page)
            assert "is not on this node yet" in b.text(f"[data-feature-missing='{route}']")


def test_off_loopback_the_dashboard_asks_for_the_key_once_and_keeps_it_in_the_session(
    net: Net, clean_console: Browser
) -> None:
    b = clean_console
    base = net.two.api_url
    key = (Path(net.two.home) / "api.key").read_text().strip()
    assert httpx.get(base + "/api/wallet").status_code == 401  # the API itself wants the key
    b.d.get(base + "/")
    b.js("sessionStorage.clear()")
    b.d.refresh()
    b.expected_refusals.append(re.escape(base) + r"/\S* - .* status of 401")
    b.wait(lambda: b.all("#key-dialog[open]"), "the key question")
    b.css("#key-input").send_keys("wrong-key")
    b.css("#key-form button[type=submit]").click()
    b.wait(lambda: "refused" in b.text("#key-error"), "the wrong key refused")
    # Escape closes the question: the page says what it needs, and the next call asks again.
    from selenium.webdriver.common.keys import Keys

    b.css("#key-input").send_keys(Keys.ESCAPE)
    b.wait(lambda: "needs its key" in b.text("#page .error"), "the page to say it needs the key")
    b.js("location.hash = '#/wallet'")  # by script: the Overview's next refresh may already be asking again
    b.wait(lambda: b.all("#key-dialog[open]"), "the key question again")
    b.css("#key-input").send_keys(key)
    b.css("#key-form button[type=submit]").click()
    b.wait(lambda: b.all("#wallet-spendable"), "node 2's wallet with the key")
    assert b.text("#wallet-address") == devnet.wallet_address(net.two)
    assert b.js("return sessionStorage.getItem('avadios.apiKey')") == key
    assert b.js("return localStorage.length") == 0  # never kept beyond the browser session
    for page in ("wallet", "peers", "chat", "overview"):  # asked once: no page asks again
        b.open(base, page)
        b.wait(lambda: not b.all("[aria-busy=true]"), f"node 2's {page} page")
        assert not b.all("#key-dialog[open]") and not b.all("#page .error"), page
    b.keys[base] = key  # a fresh tab would ask again; this one keeps it


def test_overview_shows_the_node_its_services_model_tiers_peers_and_balance(net: Net, clean_console: Browser) -> None:
    b = clean_console
    hello = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}
    httpx.post(net.one.api_url + "/v1/chat/completions", json=hello, timeout=60)
    b.open(net.one.api_url, "overview")
    assert b.text("#node-id") == net.one.node_id
    assert b.text("#health-state") == "ok"
    services = {row.get_attribute("data-service") for row in b.all("#ov-node tr[data-service]")}
    assert {"gateway", "inference", "cache", "ledger", "discovery", "verifier"} <= services
    assert MODEL in b.text("#ov-models")
    assert int(b.text("#ov-tiers [data-tier='1'] .tile-value")) >= 1  # the answer just asked for, from /metrics
    spendable = api(net.one, "/api/wallet")["spendable"]
    assert b.text("#overview-balance").split()[0].replace(",", "") == str(spendable // 1_000_000)
    b.open(net.two.api_url, "overview")
    assert net.one.node_id in b.text("#ov-peers")  # node 2 was started with node 1 as its bootstrap peer
    b.open(net.one.api_url, "overview")
    b.shot("overview")


def test_chat_streams_tokens_before_the_answer_ends_and_names_tier_and_cost(net: Net, clean_console: Browser) -> None:
    b = clean_console
    b.open(net.one.api_url, "chat")
    b.wait(lambda: b.css("#chat-model").get_attribute("value") == MODEL, "the model picker")
    # Record every change of the answer as the browser sees it: (state, characters shown).
    b.js(
        """window.seen = [];
        new MutationObserver(() => {
          const a = [...document.querySelectorAll('#chat-log .msg.assistant')].pop();
          if (a) window.seen.push([a.dataset.state, a.querySelector('.text').textContent.length]);
        }).observe(document.getElementById('chat-log'),
                   {subtree: true, childList: true, characterData: true, attributes: true});"""
    )
    b.css("#chat-max-tokens").clear()
    b.css("#chat-max-tokens").send_keys("32")
    b.css("#chat-input").send_keys("Tell me about the history of Paris.")
    b.css("#chat-send").click()
    answer = b.wait(lambda: b.all("#chat-log .msg.assistant[data-state=done]"), "the answer to finish", timeout=90)[-1]
    final = len(answer.find_element("css selector", ".text").text)
    seen = b.js("return window.seen")
    partial = {n for state, n in seen if state == "streaming" and 0 < n < final}
    assert final > 0 and len(partial) >= 2, f"no text shown while streaming: final {final} chars, seen {seen}"
    meta = answer.find_element("css selector", ".meta").text
    assert "tier 1" in meta and "free" in meta and "tokens" in meta, meta
    b.shot("chat")


def test_a_repeated_greedy_question_is_answered_from_the_cache_and_the_chat_says_tier_0(
    net: Net, clean_console: Browser
) -> None:
    b = clean_console
    b.open(net.one.api_url, "chat")
    b.wait(lambda: b.css("#chat-model").get_attribute("value") == MODEL, "the model picker")
    for field, value in (("#chat-temperature", "0"), ("#chat-max-tokens", "8")):
        b.css(field).clear()
        b.css(field).send_keys(value)
    answers = []
    for _ in range(2):
        b.css("#chat-new").click()  # the same one-question conversation twice
        b.css("#chat-input").send_keys("What is the capital of France?")
        b.css("#chat-send").click()
        done = b.wait(lambda: b.all("#chat-log .msg.assistant[data-state=done]"), "the answer", timeout=60)[-1]
        answers.append((done.get_attribute("data-tier"), done.find_element("css selector", ".text").text))
    assert [tier for tier, _ in answers] == ["1", "0"], answers
    assert answers[0][1] == answers[1][1] and answers[0][1]
    assert "tier 0 · cache" in b.text("#chat-log .msg.assistant .meta")


def test_a_bootstrap_peer_is_added_and_removed_and_a_model_route_shows_each_part(
    net: Net, clean_console: Browser
) -> None:
    b = clean_console
    b.open(net.one.api_url, "peers")
    b.wait(lambda: net.two.node_id[:12] in b.text("#peers-table"), "node 2 among node 1's peers", timeout=60)
    assert not b.all(f"#bootstrap-list li[data-address$='{net.two.node_id}']")
    b.css("#bootstrap-add").send_keys(net.two.multiaddr)
    b.css("#bootstrap-form button[type=submit]").click()
    b.wait(lambda: b.all(f"#bootstrap-list li[data-address$='{net.two.node_id}']"), "node 2 in the bootstrap list")
    assert "Added" in b.text("#bootstrap-status")
    assert any(net.two.node_id in a for a in api(net.one, "/api/peers")["bootstrap"])

    # The route of the model both nodes serve ranks node 2 (node 1 does not route to itself), parts and all.
    def ranked() -> bool:
        if not b.all("#route-table [aria-busy]") and not b.all(f"#route-table tr[data-node='{net.two.node_id}']"):
            b.css("#route-form button[type=submit]").click()
            time.sleep(1.0)
        return bool(b.all(f"#route-table tr[data-node='{net.two.node_id}']"))

    b.wait(ranked, "node 2 ranked for the model", timeout=60)
    cells = [
        c.text for c in b.css(f"#route-table tr[data-node='{net.two.node_id}']").find_elements("css selector", "td")
    ]
    assert cells[0] == "1" and cells[-1] == "ranked" and all(float(x) == float(x) for x in cells[2:7]), cells
    b.shot("peers")
    b.js("document.getElementById('route-table').scrollIntoView()")
    b.shot("peers-route")
    b.css(f"#bootstrap-list li[data-address$='{net.two.node_id}'] button").click()
    b.confirm()
    b.wait(lambda: not b.all(f"#bootstrap-list li[data-address$='{net.two.node_id}']"), "node 2 gone from the list")
    assert not any(net.two.node_id in a for a in api(net.one, "/api/peers")["bootstrap"])
    # A malformed address is refused with the reason and nothing changes.
    b.expected_refusals.append("/api/peers")
    b.css("#bootstrap-add").send_keys("not-a-multiaddr")
    b.css("#bootstrap-form button[type=submit]").click()
    b.wait(lambda: "Could not add that peer" in b.text("#bootstrap-status"), "the refusal")
    assert api(net.one, "/api/peers")["bootstrap"] == []


def test_sending_autom_changes_both_balances(net: Net, clean_console: Browser) -> None:
    b = clean_console
    amount = 1_500_000
    to = devnet.wallet_address(net.two)
    b.open(net.two.api_url, "wallet")
    b.wait(lambda: b.all("#wallet-spendable"), "node 2's balance")
    two_before = micro(b, "#wallet-spendable") + micro(b, "#wallet-pending")
    b.open(net.one.api_url, "wallet")
    b.wait(lambda: b.all("#wallet-spendable"), "node 1's balance")
    one_before = micro(b, "#wallet-spendable")
    assert b.text("#wallet-address") == devnet.wallet_address(net.one)
    b.css("#send-to").send_keys(to)
    b.css("#send-amount").send_keys("1.5")
    b.css("#send-button").click()
    assert b.wait(lambda: b.text("#confirm-amount"), "the confirmation") == "1.5 AUTOM"
    b.confirm()
    b.wait(lambda: b.text("#send-result"), "the send to be confirmed", timeout=60)
    assert "confirmed" in b.text("#send-result")
    b.wait(lambda: micro(b, "#wallet-spendable") == one_before - amount, "node 1's balance to drop by 1.5")
    assert "send" in b.text("#wallet-history")
    b.shot("wallet")
    b.open(net.two.api_url, "wallet")
    b.wait(
        lambda: micro(b, "#wallet-spendable") + micro(b, "#wallet-pending") == two_before + amount,
        "node 2's balance to grow by 1.5",
        timeout=60,
    )
    # The node claims what arrives by itself: it ends spendable on node 2.
    b.wait(lambda: micro(b, "#wallet-pending") == 0, "node 2 to claim the payment", timeout=60)


def test_a_send_that_is_refused_says_why_and_moves_nothing(net: Net, clean_console: Browser) -> None:
    b = clean_console
    b.open(net.one.api_url, "wallet")
    b.wait(lambda: b.all("#wallet-spendable"), "node 1's balance")
    before = api(net.one, "/api/wallet")
    b.expected_refusals.append("/api/wallet/send")
    b.css("#send-to").send_keys(devnet.wallet_address(net.two))
    b.css("#send-amount").send_keys("999999")
    b.css("#send-button").click()
    b.confirm()
    b.wait(lambda: "Not sent" in b.text("#send-status"), "the refusal", timeout=30)
    assert "insufficient" in b.text("#send-status").lower()
    assert api(net.one, "/api/wallet")["spendable"] == before["spendable"]


def test_a_chat_over_the_network_shows_its_cost_and_the_job_shows_on_the_jobs_page(
    net: Net, clean_console: Browser
) -> None:
    b = clean_console
    b.open(net.one.api_url, "chat")
    b.wait(lambda: b.css("#chat-model").get_attribute("value") == MODEL, "the model picker")
    b.css("#chat-new").click()
    b.css("#chat-network").click()
    # Greedy: the one provider's answer is checked token by token against the requester's own re-scoring (a
    # sampled answer was once rejected here: 0 of 1 providers passed, a 502 the page showed as such).
    for field, value in (("#chat-temperature", "0"), ("#chat-max-tokens", "12")):
        b.css(field).clear()
        b.css(field).send_keys(value)
    b.css("#chat-input").send_keys("What is the capital of France?")
    b.css("#chat-send").click()
    answer = b.wait(lambda: b.all("#chat-log .msg.assistant[data-state=done]"), "the network's answer", timeout=120)[-1]
    assert answer.get_attribute("data-tier") == "network"
    meta = answer.find_element("css selector", ".meta").text
    job = api(net.one, "/api/jobs?limit=1")["jobs"][0]
    assert job["accepted"] and job["cost_micro"] > 0
    assert f"cost {autom_text(job['cost_micro'])} AUTOM" in meta and job["job_id"][:12] in meta, meta
    b.shot("chat-network")
    b.open(net.one.api_url, "jobs")
    row = b.wait(lambda: b.text(f"#jobs-table tr[data-job='{job['job_id']}']"), "the job on the Jobs page")
    assert net.two.node_id[:12] in row and "agreed" in row, row
    b.shot("jobs")


def test_a_narrow_window_gets_a_menu_and_no_sideways_scrolling(net: Net, clean_console: Browser) -> None:
    b = clean_console
    b.d.set_window_size(420, 800)
    try:
        for page in ("overview", "peers", "wallet"):
            b.open(net.one.api_url, page)
            b.wait(lambda: not b.all("[aria-busy=true]"), f"the {page} page")
            assert b.js("return document.documentElement.scrollWidth <= window.innerWidth + 1"), page
        assert not b.css("#nav").is_displayed()
        b.css("#menu-toggle").click()
        assert b.css("#nav").is_displayed()
        b.css("#nav a[data-page=chat]").click()
        b.wait(lambda: b.js("return document.getElementById('page').dataset.ready") == "chat", "the chat page")
        assert not b.css("#nav").is_displayed()
        b.shot("narrow-chat")
    finally:
        b.d.set_window_size(1280, 800)


def test_a_frozen_service_is_reported_and_the_page_recovers(net: Net, browser: Browser) -> None:
    b = browser
    ledger = devnet_pid(net.one, "ledger-0")
    b.open(net.one.api_url, "overview")
    os.kill(ledger, signal.SIGSTOP)
    try:
        # The wallet card names the ledger's failure; the node's other cards still show what they show.
        b.wait(lambda: "Wallet (ledger)" in b.text("#ov-wallet .error"), "the ledger error", timeout=40)
        b.wait(lambda: b.all("#ov-node tr[data-service=ledger][data-missing]"), "the ledger listed as down")
        assert "down" in b.text("#ov-node tr[data-service=ledger]")
        assert b.text("#node-id") == net.one.node_id and MODEL in b.text("#ov-models")
        b.shot("service-down")
    finally:
        os.kill(ledger, signal.SIGCONT)
    b.wait(lambda: b.all("#overview-balance"), "the balance back", timeout=40)
    b.wait(lambda: not b.all("#ov-node tr[data-missing]"), "every service serving again")
    b.console_errors()  # the 504s the frozen ledger caused are logged by Chromium; nothing after them


def devnet_pid(node: devnet.DevnetNode, process: str) -> int:
    import json

    processes = json.loads((Path(node.home) / "run" / "node.json").read_text())["processes"]
    return int(processes[process]["pid"])


SPOKEN = "the weather is lovely today in the garden"


def espeak_wav(path: Path, text: str) -> Path:
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True, timeout=30)
    return path


def test_voice_page_transcribes_an_uploaded_recording(net: Net, clean_console: Browser, tmp_path: Path) -> None:
    reply = httpx.post(net.one.api_url + "/v1/audio/transcriptions", data={"model": "whisper-1"}, timeout=30)
    if reply.status_code == 404:
        pytest.skip("this node answers 404 for /v1/audio/transcriptions: the voice service is not on it yet")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is missing: it speaks the test sentence (apt-get install espeak-ng)")
    b = clean_console
    wav = espeak_wav(tmp_path / "spoken.wav", SPOKEN)
    b.open(net.one.api_url, "voice")
    b.css("#voice-file").send_keys(str(wav))
    b.wait(lambda: b.all("#voice-output[data-state=done], #voice-output[data-state=failed]"), "the transcript", 60)
    transcript = b.text("#transcript").lower()
    # tiny.en on a synthetic voice gets a word wrong now and then: most of the sentence is what a user checks.
    heard = set(re.findall(r"[a-z]+", transcript))
    assert len(heard & set(SPOKEN.split())) >= 0.6 * len(SPOKEN.split()), transcript
    # Recording from the microphone (here Chromium's fake one, a tone: no words) goes the same way, as webm.
    b.css("#voice-record").click()
    b.wait(lambda: "Stop" in b.css("#voice-record").text, "the recording to start")
    time.sleep(1.5)
    b.css("#voice-record").click()
    finished = "#voice-output[data-state=done], #voice-output[data-state=failed]"
    b.wait(lambda: b.all(finished), "the recording's transcript")
    assert b.all("#voice-output[data-state=done] #transcript"), b.text("#voice-output")
    # Text to speech plays back in the page: the browser decodes the node's WAV and knows its length.
    b.css("#speech-text").send_keys("Hello from the dashboard.")
    b.css("#speech-button").click()
    b.wait(lambda: b.all("#speech-done"), "the speech", 60)
    seconds = b.wait(
        lambda: b.js("const a = document.getElementById('speech-audio'); return a.readyState >= 1 && a.duration"),
        "the browser to load the speech",
    )
    assert 0.5 < seconds < 10, seconds
    b.shot("voice")


def test_files_page_uploads_a_file_and_lists_it(net: Net, clean_console: Browser, tmp_path: Path) -> None:
    if httpx.get(net.one.api_url + "/api/files", timeout=30).status_code == 404:
        pytest.skip("this node answers 404 for /api/files: the storage service is not on it yet")
    b = clean_console
    name = f"notes-{free_port()}.txt"
    (tmp_path / name).write_text("AVADIOS keeps this file on the network.\n" * 100)
    b.open(net.one.api_url, "files")
    b.css("#files-upload").send_keys(str(tmp_path / name))
    b.css("#files-form button[type=submit]").click()
    b.wait(lambda: name in b.text("#files-table"), "the uploaded file in the list", timeout=120)
    assert any(f["name"] == name for f in api(net.one, "/api/files")["files"])
    b.shot("files")


def test_a_node_that_stops_answering_is_named_unreachable_and_the_page_still_works(net: Net, browser: Browser) -> None:
    # Last in the module: node 2 stays down.
    b = browser
    b.open(net.two.api_url, "wallet")
    b.wait(lambda: b.all("#wallet-spendable"), "node 2's wallet")
    devnet.stop(net.two)
    b.wait(lambda: b.text("#node-health") == "node unreachable", "the header to say the node is unreachable", 20)
    b.wait(lambda: "did not answer" in b.text("#wallet-balance .error"), "the wallet to say the node did not answer")
    b.css("#nav a[data-page=peers]").click()  # the dashboard itself keeps working: pages open and say why
    b.wait(lambda: "did not answer" in b.text("#peers-table .error"), "the peers page to say the node did not answer")
    b.css("#nav a[data-page=files]").click()  # not "not on this node": the node did not answer
    b.wait(lambda: "did not answer" in b.text("#page .error"), "the files page to say the node did not answer")
    assert not b.all("[data-feature-missing]")
    b.shot("node-unreachable")
    b.console_errors()  # Chromium logs each refused connection; they are the point here
