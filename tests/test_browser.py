"""The page in a real browser: headless Chromium from the system packages, driven by Selenium
through chromedriver, offline, against a real `rag serve` on loopback and a loopback
OpenAI-compatible stand-in LLM (tests/llm_stub.py).

It types a query and sees fused passages and images (thumbnails loaded), uploads an image
and sees the same picture first, asks a question and sees the streamed answer with a [n]
citation that highlights its source, whose title links to the article. Screenshots go to
tests/artifacts/ (kept by CI as artefacts).

Set RAG_REQUIRE_BROWSER=1 (as .ci/run does) to fail instead of skip without Chromium.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from rag.config import Settings
from rag.server.config import ServerConfig
from llm_stub import STUB_KEY, STUB_MODEL, LLMStub
from server_helpers import LiveServer, make_service

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("RAG_TEST_ARTIFACTS", ROOT / "tests" / "artifacts"))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--window-size=1280,1100"]

if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    if os.environ.get("RAG_REQUIRE_BROWSER") == "1":
        raise RuntimeError("RAG_REQUIRE_BROWSER=1 but chromium/chromedriver are missing: "
                           "apt-get install -y chromium chromium-driver")
    pytest.skip("needs chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
                allow_module_level=True)

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def stub():
    with LLMStub() as s:
        yield s


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models, minilm_dir, stub):
    """`rag serve` over the bundled sample (MiniLM for text, a tiny CLIP), the stand-in LLM."""
    from rag.index.core import RagIndex
    from rag.models.embeddings import load_image_embedding, load_text_embedding
    from rag.service import RagService

    settings = Settings(storage=tmp_path_factory.mktemp("browser") / "storage", text_model=str(minilm_dir),
                        image_model=str(tiny_models["image"]), llm="openai-like", llm_base_url=stub.url,
                        llm_model=STUB_MODEL, llm_api_key=STUB_KEY, llm_vision="true", llm_max_retries=0)
    index = RagIndex(settings, text_embedding=load_text_embedding(settings),
                     image_embedding=load_image_embedding(settings))
    service = RagService(settings, index=index)
    service.ingest([ROOT / "rag" / "sample"])
    with LiveServer(settings, service, ServerConfig()) as live:
        yield live


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for downloads
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def wait(driver, condition, seconds=60):
    return WebDriverWait(driver, seconds, poll_frequency=0.1).until(lambda d: condition(d))


def shot(driver, name):
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def loaded_thumbnails(driver):
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('.hit img.thumb'))"
        ".filter(i => i.complete && i.naturalWidth > 0).length")


def submit(driver, text):
    box = driver.find_element(By.ID, "q")
    box.clear()
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def test_search_upload_and_ask_in_a_real_browser(server, browser, stub):
    d = browser
    d.get(server.url + "/")
    status = wait(d, lambda d: (t := d.find_element(By.ID, "status").text) and "passages" in t and t)
    assert status == "14 passages · 16 images · LLM stub-vl"
    assert not d.find_element(By.ID, "token-form").is_displayed()  # loopback: no token asked
    assert not d.find_element(By.ID, "preview").is_displayed()

    # 1. a typed query: passages and images in one list, thumbnails loaded
    submit(d, "coffee beans")
    wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".hit")) == 8)
    kinds = [e.get_attribute("class") for e in d.find_elements(By.CSS_SELECTOR, ".hit")]
    assert kinds.count("hit text") == 5 and kinds.count("hit image") == 3
    first = d.find_element(By.CSS_SELECTOR, ".hit.text .title")
    assert first.text == "Coffee" and first.get_attribute("href") == "https://en.wikipedia.org/wiki/Coffee"
    assert d.find_element(By.CSS_SELECTOR, ".hit .why").text.startswith("why: ")
    wait(d, lambda d: loaded_thumbnails(d) == 3)
    shot(d, "1-search")

    # 2. an uploaded image: the same picture comes first among the images
    picture = ROOT / "rag" / "sample" / "images" / "coffee-1.jpg"
    d.find_element(By.ID, "image").send_keys(str(picture))
    wait(d, lambda d: d.find_element(By.ID, "preview").is_displayed())
    d.find_element(By.CSS_SELECTOR, ".filters summary").click()  # the filters: images only
    d.find_element(By.CSS_SELECTOR, "#f-kind option[value=image]").click()
    submit(d, "")
    wait(d, lambda d: "with the query image" in d.find_element(By.ID, "message").text)
    hits = d.find_elements(By.CSS_SELECTOR, ".hit")
    assert all(h.get_attribute("class") == "hit image" for h in hits) and len(hits) == 3
    assert hits[0].find_element(By.CSS_SELECTOR, ".where").text == "https://en.wikipedia.org/wiki/Coffee"
    wait(d, lambda d: loaded_thumbnails(d) == 3)
    shot(d, "2-image-search")

    # 3. ask: the answer streams in, its [n] highlights the source, which links to the article
    d.find_element(By.ID, "clear-image").click()
    assert not d.find_element(By.ID, "preview").is_displayed()
    d.find_element(By.CSS_SELECTOR, "#f-kind option[value=both]").click()
    d.find_element(By.CSS_SELECTOR, "input[name=mode][value=ask]").click()
    assert d.find_element(By.ID, "go").text == "Ask"
    submit(d, "Where do coffee beans come from?")
    wait(d, lambda d: "cited source" in d.find_element(By.ID, "message").text)
    answer = d.find_element(By.ID, "answer-text").text
    assert answer.startswith("This is a stand-in answer to 'Where do coffee beans come from?'.")
    cites = d.find_elements(By.CSS_SELECTOR, "#answer-text a.cite")
    # the stand-in cites the best passage [1] and the first picture among the fused sources
    assert [c.text for c in cites][0] == "[1]" and len(cites) == 2
    picture = d.find_element(By.ID, f"src-{cites[1].text.strip('[]')}")
    assert picture.get_attribute("class") == "hit image"
    stream_request = stub.chat_requests()[-1]["json"]
    assert stream_request["stream"] is True
    cites[0].click()
    source = d.find_element(By.ID, "src-1")
    wait(d, lambda d: "highlight" in source.get_attribute("class"))
    link = source.find_element(By.CSS_SELECTOR, ".title")
    assert (link.text, link.get_attribute("href")) == ("Coffee", "https://en.wikipedia.org/wiki/Coffee")
    shot(d, "3-ask")
    d.set_window_size(1280, 1700)
    d.execute_script("window.scrollTo(0, 0)")
    shot(d, "page")  # the README's picture (docs/serve.png is a copy)

    # 4. a phone-sized window keeps everything readable (no horizontal scrolling)
    d.set_window_size(390, 844)
    wide = d.execute_script("const e = document.documentElement; return [e.scrollWidth, e.clientWidth]")
    assert wide[0] <= wide[1], f"the page is {wide[0]} px wide in a {wide[1]} px window"
    shot(d, "4-narrow")


def test_token_prompt_empty_index_and_no_llm_messages(browser, tmp_path, tiny_models, shared_embeddings):
    """A server that needs a token, over an empty index, with RAG_LLM=none: the page asks for
    the token, then says the index is empty, and Ask shows the prompt instead of an answer."""
    settings = Settings(storage=tmp_path / "storage", text_model=str(tiny_models["text"]),
                        image_model=str(tiny_models["image"]))
    token = "browser-token-0123456789"
    with LiveServer(settings, make_service(settings, shared_embeddings), ServerConfig(token=token)) as live:
        d = browser
        d.delete_all_cookies()
        d.set_window_size(1280, 1100)
        d.get(live.url + "/")
        form = wait(d, lambda d: (f := d.find_element(By.ID, "token-form")).is_displayed() and f)
        assert d.find_element(By.ID, "message").text == "This server needs a token: enter it above."
        assert token not in d.page_source
        form.find_element(By.ID, "token").send_keys(token + Keys.ENTER)
        wait(d, lambda d: d.find_element(By.ID, "status").text == "0 passages · 0 images · no LLM (RAG_LLM=none)")
        assert not d.find_element(By.ID, "token-form").is_displayed()
        assert d.find_element(By.ID, "message").text.startswith("The index is empty. Index a folder with `rag ingest PATH`")
        submit(d, "anything")
        wait(d, lambda d: d.find_element(By.ID, "message").text == "The index is empty: nothing to find yet.")
        d.find_element(By.CSS_SELECTOR, "input[name=mode][value=ask]").click()
        submit(d, "What is the Moon?")
        wait(d, lambda d: d.find_element(By.ID, "message").text.startswith("No LLM is configured (RAG_LLM=none)"))
        assert "Question: What is the Moon?" in d.find_element(By.ID, "prompt-text").get_attribute("textContent")
        shot(d, "5-token-empty-no-llm")


def test_ingest_form_from_the_keyboard(browser, tmp_path, tiny_models, shared_embeddings):
    """A server that allows ingesting a folder, over an empty index: the form, opened and sent
    from the keyboard, streams its progress, then reports the bad file with its reason, and
    the status shows the new counts."""
    from conftest import photo

    corpus = (tmp_path / "incoming").resolve()
    corpus.mkdir()
    (corpus / "moon.md").write_text("# Moon\n\nThe Moon is the natural satellite of the Earth.\n", encoding="utf-8")
    shutil.copy(photo("rocket.jpg"), corpus / "rocket.jpg")
    (corpus / "broken.jpg").write_bytes(b"not an image at all")
    settings = Settings(storage=tmp_path / "storage", text_model=str(tiny_models["text"]),
                        image_model=str(tiny_models["image"]))
    with LiveServer(settings, make_service(settings, shared_embeddings), ServerConfig(allow_ingest=(corpus,))) as live:
        d = browser
        d.delete_all_cookies()
        d.set_window_size(1280, 1100)
        d.get(live.url + "/")
        wait(d, lambda d: d.find_element(By.ID, "status").text == "0 passages · 0 images · no LLM (RAG_LLM=none)")
        assert d.find_element(By.ID, "message").text == (
            "The index is empty. Add a folder with \u201cAdd files to the index\u201d below, then search again.")
        d.find_element(By.CSS_SELECTOR, "#ingest summary").send_keys(Keys.ENTER)  # opens the section
        path = wait(d, lambda d: (p := d.find_element(By.ID, "ingest-path")).is_displayed() and p)
        assert path.get_attribute("value") == str(corpus)  # the allowed folder, ready to send
        assert d.find_element(By.ID, "ingest-allowed").text == (
            f"Allowed folder: {corpus}. Give an absolute path inside one of them.")
        d.execute_script(  # record every progress line the page shows
            "window.stages = []; new MutationObserver(() => stages.push(document.getElementById('ingest-stage')"
            ".textContent)).observe(document.getElementById('ingest-stage'), {childList: true, characterData: true,"
            " subtree: true});")
        path.send_keys(Keys.ENTER)
        report = wait(d, lambda d: (r := d.find_element(By.ID, "ingest-report")).is_displayed() and r)
        assert d.find_element(By.ID, "ingest-summary").text == (
            "Indexed 2 files: 1 passage, 1 image · 0 unchanged · 1 file could not be indexed:")
        assert [li.text for li in d.find_elements(By.CSS_SELECTOR, "#ingest-bad li")] == [
            f"{corpus}/broken.jpg: not a recognised image format (corrupt or unsupported)"]
        assert d.switch_to.active_element == report  # focus moves to the report
        stages = d.execute_script("return window.stages")
        assert stages[0] == "Starting…" and "Embedding passages: 1 of 1" in stages, stages
        wait(d, lambda d: d.find_element(By.ID, "status").text == "1 passages · 1 images · no LLM (RAG_LLM=none)")
        assert d.find_element(By.ID, "message").text == (
            "The ingest finished; some files could not be indexed (see the list).")
        shot(d, "6-ingest")
