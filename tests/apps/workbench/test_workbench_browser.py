"""The workbench in a real browser: headless Chromium (Debian ``chromium`` and
``chromium-driver``) driven by selenium against the server on a free local port.

Set ``WORKBENCH_SHOTS=DIR`` to also save screenshots of every page at desktop width and at
400 px. Without Chromium these tests fail (they never skip): install ``chromium`` and
``chromium-driver`` (apt) and ``selenium`` (requirements-dev.txt).
"""

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from apps.workbench.lab import complete_lab, lab_request
from apps.workbench.server import create_app
from runkit.run_dir import RunDir
from sae_jax.feature_labels import read_labels
from tests.apps.workbench.workbench_fixture import ANALYSIS_BUILDS, EXPLAINED, make_run

# Slow (a headless browser driving the workbench):
# run by `pytest -m slow`; .ci/run runs both passes.
pytestmark = pytest.mark.slow

CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
WAIT = 60  # seconds; the first completion compiles the model


def _browser_paths() -> str:
    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which(
        "google-chrome")
    missing = [name for name, path in (("chromium", chrome), ("chromedriver", CHROMEDRIVER))
               if not path or not os.path.exists(path)]
    if missing:
        pytest.fail(f"the browser tests need {' and '.join(missing)}: install the Debian packages "
                    "chromium and chromium-driver (apt-get install chromium chromium-driver), "
                    "or set CHROMEDRIVER to a chromedriver path", pytrace=False)
    return chrome


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import uvicorn

    workdir = make_run(tmp_path_factory.mktemp("browser_run"))
    app = create_app(workdir, num_builds=ANALYSIS_BUILDS, warm=True)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started:
        if time.time() > deadline or not thread.is_alive():
            pytest.fail("the workbench server did not start")
        time.sleep(0.05)
    if not app.state.workbench.ready.wait(600):  # until then the pages say "loading"
        pytest.fail("the workbench did not finish warming up in 10 minutes")
    yield f"http://127.0.0.1:{port}", app.state.workbench.run, workdir
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    chrome = _browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _wait(driver, condition, timeout=WAIT):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def _shots(driver, name: str) -> None:
    """Screenshots at desktop width and at 400 px, when WORKBENCH_SHOTS names a folder; the
    page must not scroll sideways at either width."""
    out = os.environ.get("WORKBENCH_SHOTS")
    for width in (1280, 400):
        driver.set_window_size(width, 1000)
        time.sleep(0.3)
        overflow = driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 1, f"{name} at {width}px scrolls sideways by {overflow}px"
        if out:
            Path(out).mkdir(parents=True, exist_ok=True)
            height = driver.execute_script("return document.body.scrollHeight")
            driver.set_window_size(width, min(max(height + 120, 600), 6000))
            time.sleep(0.2)
            driver.save_screenshot(str(Path(out) / f"{name}_{width}.png"))
    driver.set_window_size(1280, 1000)


def test_list_search_and_open_a_feature(server, browser):
    from selenium.webdriver.common.by import By

    base, _, _ = server
    browser.get(base + "/?scope=all")
    rows = browser.find_elements(By.CSS_SELECTOR, "#features tbody tr")
    assert len(rows) == 50  # the first page
    _shots(browser, "list")
    feature, text = next(iter(EXPLAINED.items()))
    box = browser.find_element(By.ID, "q")
    box.clear()
    box.send_keys(text.split(": ")[1].lower())
    browser.find_element(By.ID, "go").click()
    _wait(browser, lambda d: "q=" in d.current_url)
    links = browser.find_elements(By.CSS_SELECTOR, "#features a.fid")
    assert [a.text for a in links] == [str(feature)]
    links[0].click()
    _wait(browser, lambda d: d.current_url.endswith(f"/feature/{feature}"))
    card = browser.find_element(By.ID, f"f{feature}")
    assert "Fires on builds with" in card.text
    _shots(browser, "feature")


def test_label_edit_persists_after_reload(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    base, _, workdir = server
    browser.get(base + "/feature/12")
    name = browser.find_element(By.ID, "lname")
    name.clear()
    name.send_keys("Browser-named feature")
    Select(browser.find_element(By.ID, "lcategory")).select_by_visible_text("mechanical")
    browser.find_element(By.ID, "lsave").click()
    _wait(browser, lambda d: d.find_element(By.ID, "lstatus").text.startswith("saved"))
    browser.refresh()
    assert browser.find_element(By.ID, "lname").get_attribute("value") == "Browser-named feature"
    assert Select(browser.find_element(By.ID, "lcategory")).first_selected_option.text == \
        "mechanical"
    assert "Browser-named feature" in browser.find_element(By.ID, "f12").text
    assert read_labels(RunDir(workdir).labels_path)[12].name == "Browser-named feature"


def _answered(driver) -> int:
    return int(driver.find_element("tag name", "body").get_attribute("data-answered") or 0)


def _click_and_wait(driver, selector: str) -> None:
    """Click, then wait until the lab has shown the answer to a newer request."""
    before = _answered(driver)
    driver.find_element("css selector", selector).click()
    _wait(driver, lambda d: _answered(d) > before)


def _zeroing_case(run):
    """A weapon, two abilities to click and a feature active on that partial build whose
    zeroing changes the completion (found through the lab's own functions)."""
    _, _, weapon_vocab, _ = run.models()
    for gid in weapon_vocab.game_ids[:12]:
        for abilities in (["swim_speed_up", "ink_saver_main"], ["run_speed_up", "quick_respawn"],
                          ["special_charge_up", "ink_resistance_up"]):
            body = {"weapon": int(gid), "abilities": {a: 10 for a in abilities}}
            out = complete_lab(run, lab_request(body, run))
            for f in out["active_features"][:4]:
                edited = complete_lab(run, lab_request(
                    dict(body, edits=[{"feature": f["feature"], "value": 0}]), run))
                if edited["diff"]["changed_slots"] > 0:
                    return int(gid), abilities, f["feature"]
    pytest.fail("no active feature of the tried builds changes the completion when zeroed")


def test_lab_zeroing_a_feature_changes_the_completion(server, browser):
    from selenium.webdriver.common.by import By

    base, run, _ = server
    weapon, abilities, feature = _zeroing_case(run)
    browser.get(f"{base}/lab?weapon={weapon}")
    _wait(browser, lambda d: d.find_elements(By.ID, "buildtable"))
    for a in abilities:  # click each ability: a main of it (10 AP); wait for its completion
        _click_and_wait(browser, f'.ability[data-ability="{a}"] span')
    assert browser.find_elements(By.CSS_SELECTOR, f'#activetable tr[data-feature="{feature}"]')
    unsteered = browser.find_element(By.ID, "buildtable").text
    assert "features:" in browser.find_element(By.ID, "changes").text or \
        "no feature changed" in browser.find_element(By.ID, "changes").text
    _click_and_wait(browser, f'#activetable tr[data-feature="{feature}"] button.zero')
    summary = browser.find_element(By.ID, "diffsummary").text
    changed = int(summary.split(" of ")[0])
    assert changed > 0, summary
    assert len(browser.find_elements(By.CSS_SELECTOR, "#buildtable td.changed")) == changed
    assert browser.find_element(By.ID, "buildtable").text != unsteered
    _shots(browser, "lab")


def test_lab_shows_a_bad_request_message(server, browser):
    from selenium.webdriver.common.by import By

    base, _, _ = server
    browser.get(f"{base}/lab")
    _wait(browser, lambda d: d.find_elements(By.ID, "buildtable"))
    for a in ("comeback", "last_ditch_effort"):  # both head-only: no legal build holds both
        _click_and_wait(browser, f'.ability[data-ability="{a}"] span')
    assert "abilities" in browser.find_element(By.ID, "error").text
    assert "head" in browser.find_element(By.ID, "error").text


def test_lab_lists_the_roster_with_the_models_weapons_choosable(server, browser):
    from selenium.webdriver.common.by import By

    from primary.weapons import WEAPONS

    base, run, _ = server
    browser.get(f"{base}/lab")
    _wait(browser, lambda d: d.find_elements(By.ID, "buildtable"))
    options = browser.find_elements(By.CSS_SELECTOR, "#weapon option")
    assert len(options) == len(WEAPONS)
    known = {int(g) for g in run.models()[2].game_ids}
    for o in options:
        assert o.get_attribute("disabled") == (None if int(o.get_attribute("value")) in known
                                               else "true")
    group = browser.find_element(By.CSS_SELECTOR, "#weapon optgroup")
    assert group.get_attribute("label") == "not known to this model"
    assert "Charcoal Decavitator" in group.text


def _lab_state(driver) -> tuple[int, dict]:
    """The lab's weapon and its abilities with AP above 0, as the page holds them."""
    from selenium.webdriver.common.by import By

    weapon = int(driver.find_element(By.ID, "weapon").get_attribute("value"))
    abilities = {}
    for box in driver.find_elements(By.CSS_SELECTOR, ".ability"):
        ap = int(box.find_element(By.TAG_NAME, "input").get_attribute("value") or 0)
        if ap:
            abilities[box.get_attribute("data-ability")] = ap
    return weapon, abilities


def test_an_example_build_opens_in_the_build_lab(server, browser):
    from selenium.webdriver.common.by import By

    from apps.analysis.report import ability_label

    base, run, _ = server
    freq = run.index()["frequency"]
    feature = next(int(f) for f in freq.argsort()[::-1] if freq[f] < 0.3)
    page = run.feature_page(feature)
    browser.get(f"{base}/feature/{feature}")
    links = browser.find_elements(By.CSS_SELECTOR, f"#f{feature} a.tolab")
    assert len(links) == len(page["top_examples"])
    example = page["top_examples"][1]
    links[1].click()
    _wait(browser, lambda d: d.find_elements(By.ID, "buildtable"))
    assert _lab_state(browser) == (example["weapon_id"], dict(example["abilities"]))
    ap = browser.find_element(By.ID, "build").text
    for ability, points in example["abilities"]:  # the full build completes to itself
        assert f"{ability_label(ability)} {points}" in ap, (ability, ap)
    assert browser.find_element(By.ID, "error").text == ""
    # a band's example too
    browser.get(f"{base}/feature/{feature}")
    band = page["bands"][-1]["examples"][0]
    browser.find_element(By.CSS_SELECTOR, "#band4 a.tolab").click()
    _wait(browser, lambda d: d.find_elements(By.ID, "buildtable"))
    assert _lab_state(browser) == (band["weapon_id"], dict(band["abilities"]))


def test_set_it_in_the_build_lab_opens_its_strongest_build_not_an_empty_one(server, browser):
    from selenium.webdriver.common.by import By

    base, run, _ = server
    freq = run.index()["frequency"]
    feature = next(int(f) for f in freq.argsort()[::-1] if freq[f] < 0.3)
    weapon, mains = run.top_build_start(feature)
    browser.get(f"{base}/feature/{feature}")
    browser.find_element(By.ID, "setlab").click()
    _wait(browser, lambda d: d.find_elements(By.ID, "buildtable"))
    assert _lab_state(browser) == (weapon, mains) and mains
    edit = browser.find_element(By.CSS_SELECTOR, ".edit .efeature")
    assert edit.get_attribute("value") == str(feature)
    assert f"feature {feature} = " in browser.find_element(By.ID, "build").text
