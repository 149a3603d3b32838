"""A worker's experience in headless Chromium: invitation link, keyboard labeling, gold feedback, resuming."""
from __future__ import annotations

import threading

import pandas as pd
import pytest

from datakit import open_dataset
from datakit.crowd.app import make_server
from datakit.crowd.credentials import CredentialStore
from datakit.crowd.tasks import make_binary_tasks, save_tasks

from browser_helpers import headless_chrome


@pytest.fixture
def invited_server(crowd_dataset):
    root, truth = crowd_dataset
    m = open_dataset(root).manifest
    own = m.set_index("id")["label"]
    gold_ids = m.groupby("label").head(2)["id"]
    tasks = make_binary_tasks(m, grid_size=6, gold=pd.Series([truth[i] == own[i] for i in gold_ids], index=gold_ids),
                              gold_per_task=1, seed=0)
    save_tasks(root, tasks)
    token = CredentialStore(root / "votes.sqlite").invite(["alice"])["alice"]
    srv = make_server(root, port=0, pause_below=None)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}", tasks, token
    srv.shutdown()
    srv.server_close()


@pytest.mark.slow
@pytest.mark.browser
def test_invited_worker_labels_with_the_keyboard_and_resumes(invited_server, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    srv, base, tasks, token = invited_server
    browser = headless_chrome(tmp_path)
    keys = lambda *k: ActionChains(browser).send_keys(*k).perform()  # noqa: E731 - to the focused element
    cells = lambda: browser.find_elements(By.CSS_SELECTOR, "#grid .cell")  # noqa: E731
    try:
        wait = WebDriverWait(browser, 30)
        # without the link: told to open it
        browser.get(base + "/")
        wait.until(EC.visibility_of_element_located((By.ID, "need-link")))
        browser.get(f"{base}/join?token={token}")
        wait.until(lambda b: len(cells()) > 0)
        assert browser.current_url == base + "/"  # the secret is gone from the address bar
        assert browser.find_element(By.ID, "who").text == "alice"
        first = browser.find_element(By.ID, "task-id").text
        grid = tasks[tasks["task"] == first].sort_values("position")
        # keyboard only: Space marks, arrows move, Enter submits
        keys(Keys.SPACE, Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, Keys.SPACE)
        marked = [c.get_attribute("data-item") for c in cells() if "selected" in c.get_attribute("class")]
        assert marked == [grid["item"].iloc[0], grid["item"].iloc[2]]
        keys(Keys.ENTER)
        wait.until(EC.visibility_of_element_located((By.ID, "next")))
        feedback = browser.find_element(By.ID, "feedback").text
        assert f"Saved {len(grid)} answers." in feedback
        votes = srv.app.db.frame()
        assert set(votes["worker"]) == {"alice"} and set(votes.loc[votes["label"] == "yes", "item"]) == set(marked)
        # gold feedback: the right count, and the wrong gold cells marked with the expected answer
        gold = grid[grid["gold"].notna()]
        given = {i: ("yes" if i in marked else "no") for i in grid["item"]}
        wrong = [i for i, g in zip(gold["item"], gold["gold"]) if given[i] != g]
        assert f"Check items: {len(gold) - len(wrong)} of {len(gold)} right." in feedback
        shown = [c.get_attribute("data-item") for c in cells() if "wrong" in c.get_attribute("class")]
        assert shown == wrong
        # Enter again: the next task; mark one image, then close the tab without submitting
        keys(Keys.ENTER)
        wait.until(lambda b: b.find_element(By.ID, "task-id").text not in ("", first))
        second = browser.find_element(By.ID, "task-id").text
        wait.until(lambda b: b.switch_to.active_element.get_attribute("data-item") == cells()[0].get_attribute("data-item"))
        keys(Keys.ARROW_RIGHT, Keys.SPACE)
        pending = cells()[1].get_attribute("data-item")
        old = browser.current_window_handle
        browser.switch_to.new_window("tab")
        fresh = browser.current_window_handle
        browser.switch_to.window(old)
        browser.close()
        browser.switch_to.window(fresh)
        # reopened: same worker (the cookie), same task, the mark kept, the count of done tasks right
        browser.get(base + "/")
        wait.until(lambda b: len(cells()) > 0 and b.find_element(By.ID, "task-id").text == second)
        assert browser.find_element(By.ID, "n-done").text == "1"
        assert [c.get_attribute("data-item") for c in cells() if "selected" in c.get_attribute("class")] == [pending]
        keys(Keys.ENTER)
        wait.until(EC.visibility_of_element_located((By.ID, "next")))
        votes = srv.app.db.frame()
        assert set(votes["task"]) == {first, second}
        assert set(votes.loc[(votes["task"] == second) & (votes["label"] == "yes"), "item"]) == {pending}
    finally:
        browser.quit()
