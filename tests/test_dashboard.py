"""The dashboard over a store a real federated run writes: its API, its refusals, and its pages in headless Chromium."""

import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from starlette.testclient import TestClient

from fedrp.cli import main as fedrp_main
from server.dashboard.app import bearer, check_binding, create_app, start_in_thread
from server.store import RunStore
from tests.test_federation import simulate

ROUNDS = 3
BROWSER_PACKAGES = "apt-get install chromium chromium-driver"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_run(tmp_path_factory, glue_dir):
    """Three clients over three rounds with DP; partition 2 sends a wrong fingerprint every round.
    The ServerApp serves the dashboard itself (run-config key dashboard-port)."""
    tmp = tmp_path_factory.mktemp("dashboard")
    port = _free_port()
    proc = simulate(tmp, glue_dir, "--num-server-rounds", str(ROUNDS), "--fraction-train", "1.0",
                    "--fraction-evaluate", "0", "--faulty-clients", "2:wrong-fingerprint", "--dp-epsilon", "8",
                    "--dashboard-port", str(port), supernodes=3, wait=False,
                    engine="inprocess")  # no Ray to start; a DP round takes seconds, time for the browser to look
    yield SimpleNamespace(proc=proc, store=tmp / "store.sqlite", port=port, tmp=tmp)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def finished(live_run) -> dict:
    live_run.proc.wait(timeout=900)
    assert live_run.proc.returncode == 0, (live_run.tmp / "stderr.txt").read_text()[-3000:]
    return json.loads((live_run.tmp / "stdout.txt").read_text().strip().splitlines()[-1])


def _rounds_done(store: Path) -> tuple[str, int]:
    """Run 1's status and completed rounds, ("", 0) before the server has created them."""
    if not store.exists():
        return "", 0
    reader = RunStore.open_readonly(store)  # a store appears with its mark (server.store.create)
    try:
        runs = reader.runs()
        return (runs[-1]["status"], sum(r["round"] >= 1 for r in reader.rounds(1))) if runs else ("", 0)
    finally:
        reader.close()


def browser_paths() -> tuple[str, str] | str:
    """Debian's chromium and chromedriver, or why the browser tests cannot run."""
    found = {name: shutil.which(name) for name in ("chromium", "chromedriver")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        return f"no {' or '.join(missing)} on PATH: {BROWSER_PACKAGES} (Debian's packages; .ci/run installs them)"
    return found["chromium"], found["chromedriver"]


def without_browser(reason: str) -> None:
    """Outside CI a machine without Chromium skips the browser tests, saying what to install; in CI (any
    non-empty $CI) the same absence is a failure, so that the browser tests never silently stop running."""
    if os.environ.get("CI"):
        pytest.fail(f"the browser tests need Chromium in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        without_browser("no selenium: pip install -e '.[test]'")
    paths = browser_paths()
    if isinstance(paths, str):
        without_browser(paths)
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1800"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(paths[1]), options=options)
    yield driver
    driver.quit()


@pytest.mark.parametrize("ci", ["", "true"])
def test_a_missing_browser_skips_outside_ci_and_fails_in_ci(monkeypatch, ci):
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "chromedriver" else f"/usr/bin/{name}")
    monkeypatch.setenv("CI", ci)
    reason = browser_paths()
    assert reason == f"no chromedriver on PATH: {BROWSER_PACKAGES} (Debian's packages; .ci/run installs them)"
    with pytest.raises(BaseException) as outcome:  # caught whichever it is: an escaped skip would hide a bug
        without_browser(reason)
    assert outcome.type is (pytest.fail.Exception if ci else pytest.skip.Exception)
    outcome.match(BROWSER_PACKAGES)
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    assert browser_paths() == ("/usr/bin/chromium", "/usr/bin/chromedriver")


def _wait(condition, timeout: float = 60.0, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _points(driver) -> dict[str, list[int]]:
    """How many points each chart's traces draw (plotly keeps its data on the div)."""
    return driver.execute_script(
        "const out = {}; for (const id of ['chart-metrics', 'chart-bytes', 'chart-clients', 'chart-epsilon']) {"
        "  const d = document.getElementById(id); out[id] = (d.data || []).map(t => t.x.length); } return out;")


@pytest.mark.slow
def test_run_page_in_progress_then_finished_in_chromium(live_run, browser, request):
    """A run in progress: one point per completed round, new rounds appear without a reload.
    Then the finished run: every round, and the refused replies in the table."""
    _wait(lambda: _rounds_done(live_run.store)[1] >= 1, 600, "round 1 in the store")
    browser.get(f"http://127.0.0.1:{live_run.port}/runs/1")
    status, done = _rounds_done(live_run.store)
    assert status == "running" and done < ROUNDS, "the run finished before the page could see it in progress"
    _wait(lambda: browser.execute_script("return document.body.dataset.rounds") == str(done), 30, "the first draw")
    points = _points(browser)
    assert points["chart-metrics"] and all(n == done for n in points["chart-metrics"])
    assert all(n == done for n in points["chart-bytes"] + points["chart-clients"] + points["chart-epsilon"])
    assert "running" in browser.find_element("id", "summary").text
    # The same page, not reloaded, catches up with the next round.
    _wait(lambda: int(browser.execute_script("return document.body.dataset.rounds")) > done, 600, "a live update")

    request.getfixturevalue("finished")  # the ServerApp, and its dashboard, have exited: serve the store here
    server = start_in_thread(live_run.store, "127.0.0.1", port := _free_port(), None)
    _wait(lambda: server.started, 30, "the dashboard")
    browser.get(f"http://127.0.0.1:{port}/runs/1")
    _wait(lambda: browser.execute_script("return document.body.dataset.rounds") == str(ROUNDS), 30, "the finished run")
    points = _points(browser)
    assert set(points["chart-metrics"]) == {ROUNDS} and set(points["chart-epsilon"]) == {ROUNDS}
    rows = [r.text for r in browser.find_elements("css selector", "#refusals tbody tr")]
    assert len(rows) == ROUNDS and all("partition 2" in r and "fingerprint-mismatch" in r for r in rows)
    assert "completed" in browser.find_element("id", "summary").text
    assert browser.save_screenshot(str(live_run.tmp / "run-page.png"))
    shots = os.environ.get("FEDRP_SCREENSHOT_DIR")  # keep a copy where CI or a person can look at it
    if shots:
        browser.save_screenshot(str(Path(shots) / "dashboard-test-run.png"))
    server.should_exit = True


@pytest.fixture(scope="module")
def client(live_run, finished) -> TestClient:
    return TestClient(create_app(live_run.store))


@pytest.mark.slow
def test_api_lists_the_run_with_its_final_metric_and_its_best_with_the_round(client, finished):
    (run,) = client.get("/api/runs").json()
    assert (run["status"], run["task"], run["method"]) == ("completed", "sst2", "slash")
    assert (run["rounds_done"], run["num_rounds"], run["metric"]) == (ROUNDS, ROUNDS, "accuracy")
    accuracy = [r["metrics"]["accuracy"] for r in finished["rounds"]]
    assert (run["final"], run["final_round"]) == (accuracy[-1], ROUNDS)
    assert run["best"] == max(accuracy) and accuracy[run["best_round"]] == max(accuracy)


@pytest.mark.slow
def test_api_run_view_matches_the_stored_rounds(client, finished):
    view = client.get("/api/runs/1").json()
    s = view["series"]
    assert s["round"] == list(range(1, ROUNDS + 1))
    assert s["server"]["accuracy"] == [r["metrics"]["accuracy"] for r in finished["rounds"][1:]]
    assert s["bytes_up"] == [r["bytes_up"] for r in finished["rounds"][1:]]
    assert all(b == 3 * 7176 for b in s["bytes_up"])  # the refused replies arrived too
    assert s["accepted"] == [2] * ROUNDS and s["refused"] == [1] * ROUNDS
    assert all(0 < a < b for a, b in zip(s["epsilon_max"], s["epsilon_max"][1:])) and s["epsilon_max"][-1] <= 8.0
    assert len(view["run"]["fingerprint"]) == 64
    assert view["spec"]["d"] == 1024 and view["config"]["dp-epsilon"] == 8.0
    assert view["initial_metrics"] == finished["rounds"][0]["metrics"]
    assert {(r["round"], r["client"], r["reason"]) for r in view["refusals"]} == {
        (n, "partition 2", "fingerprint-mismatch") for n in range(1, ROUNDS + 1)}
    by_client = {c["client"]: c for c in view["clients"]}
    assert set(by_client) == {"partition 0", "partition 1", "partition 2"}
    assert by_client["partition 2"]["accepted"] == 0 and by_client["partition 2"]["refused"] == ROUNDS
    spent = finished["epsilon_spent"]
    for pid in ("0", "1"):
        row = by_client[f"partition {pid}"]
        assert row["epsilon"] == spent[pid] and row["examples"] > 0 and "train-loss" in row["last_metrics"]


@pytest.mark.slow
def test_downloads_give_every_round_as_csv_and_json(client, finished):
    as_json = client.get("/api/runs/1/rounds.json")
    assert as_json.headers["content-disposition"] == 'attachment; filename="run-1-rounds.json"'
    rows = as_json.json()
    assert [r["round"] for r in rows] == list(range(ROUNDS + 1))
    assert [r["server_accuracy"] for r in rows] == [r["metrics"]["accuracy"] for r in finished["rounds"]]
    lines = client.get("/api/runs/1/rounds.csv").text.strip().splitlines()
    assert len(lines) == ROUNDS + 2 and lines[0].startswith("round,server_accuracy")


def store_files_digest(store: Path) -> dict[str, str | None]:
    """sha256 of a WAL database's three files (None where absent): a write may land in any of them."""
    return {suffix: hashlib.sha256(p.read_bytes()).hexdigest() if (p := Path(f"{store}{suffix}")).exists() else None
            for suffix in ("", "-wal", "-shm")}


@pytest.mark.slow
def test_dashboard_never_writes_the_store(client, live_run, finished):
    before = store_files_digest(live_run.store)
    for url in ("/", "/runs/1", "/api/runs", "/api/runs/1", "/api/runs/1/rounds.csv"):
        assert client.get(url).status_code == 200
    assert client.post("/api/runs").status_code == 405
    assert client.get("/api/runs/7").status_code == 404
    assert client.get(f"/api/runs/{10**30}").status_code == 404  # beyond SQLite's integers
    assert store_files_digest(live_run.store) == before


@pytest.mark.slow
def test_token_is_required_off_loopback(live_run, finished):
    gated = TestClient(create_app(live_run.store, token="s3cret"))
    assert gated.get("/api/runs").status_code == 401
    assert gated.get("/runs/1").status_code == 401
    assert gated.get("/api/runs?token=wrong").status_code == 401
    assert gated.get("/api/runs?token=s3cret").status_code == 200
    assert gated.get("/api/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    check_binding("127.0.0.1", None)
    with pytest.raises(ValueError, match="not loopback: give a token"):
        check_binding("0.0.0.0", None)
    assert fedrp_main(["dashboard", "--store", str(live_run.store), "--host", "0.0.0.0"]) == 2


@pytest.mark.parametrize("port", ["70000", "-1", "0"])
def test_a_port_out_of_range_is_refused_in_one_line(tmp_path, capsys, port):
    assert fedrp_main(["dashboard", "--store", str(tmp_path / "s.sqlite"), "--port", port]) == 2
    assert capsys.readouterr().err.strip() == f"fedrp dashboard: error: port must be between 1 and 65535, got {port}"


def test_an_oversized_run_id_is_not_found(tmp_path):
    """Past 4,300 digits int() refuses a string: such an id must be a 404, not a 500 with a traceback."""
    store = RunStore(tmp_path / "s.sqlite")
    store.start_run("sst2", "slash", "b", {}, None, None, 3)
    store.close()
    client = TestClient(create_app(tmp_path / "s.sqlite"))
    assert client.get("/api/runs/1").status_code == 200
    huge = "9" * 5000
    for url in (f"/runs/{huge}", f"/api/runs/{huge}", f"/api/runs/{huge}/rounds.csv", f"/api/runs/{2**63}"):
        assert client.get(url).status_code == 404, url


def test_a_missing_or_foreign_store_gets_a_clear_page(tmp_path, caplog):
    missing = TestClient(create_app(tmp_path / "nothing.sqlite"))
    page = missing.get("/")
    assert page.status_code == 503 and "no run store at" in page.text and "Traceback" not in page.text
    assert missing.get("/api/runs").json()["error"].startswith("no run store at")
    assert "no run store at" in caplog.text
    foreign = tmp_path / "other.sqlite"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE t (x)")
    page = TestClient(create_app(foreign)).get("/runs/1")
    assert page.status_code == 503 and "is not a fedrp run store" in page.text


TOKEN = "s3cret"


@pytest.fixture
def small_store(tmp_path) -> Path:
    """A finished two-round run written straight into a store: enough for a table and charts, in a second."""
    path = tmp_path / "s.sqlite"
    store = RunStore(path)
    run = store.start_run("sst2", "slash", "b", {}, None, None, 2)
    for rnd, accuracy in enumerate((0.5, 0.7, 0.8)):
        store.add_round(run, rnd, {"accuracy": accuracy}, {"train-loss": 1 - accuracy} if rnd else None,
                        bytes_up=3 * 7176 if rnd else 0, bytes_down=3 * 7176 if rnd else 0, accepted=3 if rnd else 0)
    store.end_run(run, "completed")
    store.close()
    return path


def test_an_unknown_run_is_not_found_on_every_per_run_url(small_store):
    """Run 2 does not exist: its page and downloads are a 404, as its API is, never a 200 with an empty body."""
    client = TestClient(create_app(small_store))
    for url in ("/runs/{}", "/api/runs/{}", "/api/runs/{}/rounds.json", "/api/runs/{}/rounds.csv",
                "/api/runs/{}/replies.csv"):
        assert client.get(url.format(1)).status_code == 200, url
        missing = client.get(url.format(2))
        assert missing.status_code == 404 and "no run 2 in" in missing.text, url


def test_a_token_visit_sets_a_cookie_that_opens_the_page_assets_and_api(small_store):
    """A browser gives the token once (?token=) and loads the page's own scripts, styles and data with the
    cookie it got; a missing or wrong token, or a forged cookie, stays a 401 and never sets the cookie."""
    gated = TestClient(create_app(small_store, token=TOKEN))
    assets = ("/static/dashboard.js", "/static/dashboard.css", "/static/plotly.min.js", "/api/runs", "/runs/1")
    assert all(gated.get(url).status_code == 401 for url in assets)
    wrong = gated.get("/?token=wrong")
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers and not gated.cookies
    page = gated.get(f"/?token={TOKEN}")
    assert page.status_code == 200
    cookie = page.headers["set-cookie"]
    assert cookie.startswith("fedrp-dashboard-80=") and TOKEN not in cookie
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= {part.strip() for part in cookie.split(";")}
    assert all(gated.get(url).status_code == 200 for url in assets)  # the cookie alone, as a browser sends it
    again = gated.get("/api/runs?token=wrong")  # a wrong token is refused even beside a good cookie
    assert again.status_code == 401 and "set-cookie" not in again.headers

    forged = TestClient(create_app(small_store, token=TOKEN), cookies={"fedrp-dashboard-80": "0" * 64})
    assert forged.get("/api/runs").status_code == 401
    other = TestClient(create_app(small_store, token="another"), cookies=dict(gated.cookies))
    assert other.get("/api/runs").status_code == 401  # a cookie of the old token after a restart with a new one


@pytest.mark.parametrize("header, status", [(f"Bearer {TOKEN}", 200), (f"bearer {TOKEN}", 200),
                                            (f"BEARER {TOKEN}", 200), ("Bearer wrong", 401), (TOKEN, 401),
                                            (f"Basic {TOKEN}", 401), ("Bearer", 401)])
def test_the_bearer_scheme_is_case_insensitive(small_store, header, status):
    """RFC 7235: the scheme of an Authorization header is case-insensitive; only Bearer carries the token."""
    response = TestClient(create_app(small_store, token=TOKEN)).get("/api/runs", headers={"Authorization": header})
    assert response.status_code == status and "set-cookie" not in response.headers
    assert bearer(header) == (TOKEN if header.lower() == f"bearer {TOKEN}" else "wrong" if "wrong" in header else "")


@pytest.fixture
def busy_port():
    """A port some other program listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_busy_port_is_refused_in_one_line_before_uvicorn_starts(small_store, busy_port, capsys):
    assert fedrp_main(["dashboard", "--store", str(small_store), "--port", str(busy_port)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"fedrp dashboard: error: port {busy_port} on 127.0.0.1 is in use; expected a free port (--port)"]


def test_fedrp_dashboard_serves_on_the_socket_it_bound(small_store):
    """The command binds the port itself and hands that socket to uvicorn: the server must answer on it, and
    stop on Ctrl-C without a traceback."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fedrp.cli", "dashboard", "--store", str(small_store), "--port",
                             str(port), "--token", TOKEN], stderr=subprocess.PIPE, text=True)
    try:
        def runs() -> list | None:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/api/runs",
                                             headers={"Authorization": f"bearer {TOKEN}"})
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return json.loads(response.read())
            except OSError:
                assert proc.poll() is None, proc.stderr.read()
                return None
        assert [r["status"] for r in _wait(runs, 60, "fedrp dashboard")] == ["completed"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr.read()


@pytest.mark.parametrize("host, starts, ends", [
    ("no-such-host.invalid", "--host no-such-host.invalid does not resolve (", "a name of this machine"),
    ("192.0.2.1", "cannot listen on 192.0.2.1:{port} (", "expected an address of this machine (--host)"),  # TEST-NET-1
])
def test_a_host_that_cannot_be_bound_is_refused_in_one_line(small_store, capsys, host, starts, ends):
    port = _free_port()
    argv = ["dashboard", "--store", str(small_store), "--host", host, "--port", str(port), "--token", TOKEN]
    assert fedrp_main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"fedrp dashboard: error: {starts.format(port=port)}") and line.endswith(ends)


def test_token_mode_in_chromium_shows_the_runs_and_charts(small_store, browser):
    """A browser opens /?token=T once: the cookie it gets loads the page's scripts, plotly and data, on this
    page and the next, and the token leaves the address bar."""
    server = start_in_thread(small_store, "127.0.0.1", port := _free_port(), TOKEN)
    try:
        _wait(lambda: server.started, 30, "the dashboard")
        browser.get(f"http://127.0.0.1:{port}/?token={TOKEN}")
        rows = _wait(lambda: browser.find_elements("css selector", "#runs tbody tr"), 30, "the runs table")
        assert len(rows) == 1 and "completed" in rows[0].text and "accuracy 0.8000 (best 0.8000, round 2)" in rows[0].text
        assert browser.current_url == f"http://127.0.0.1:{port}/"
        rows[0].find_element("tag name", "a").click()
        _wait(lambda: browser.execute_script("return document.body.dataset.rounds") == "2", 30, "the charts")
        points = _points(browser)
        assert points["chart-metrics"] == [2, 2] and points["chart-bytes"] == [2, 2]
        # every round sent the same bytes: the axis starts at zero instead of zooming into the last digits
        low, high = browser.execute_script("return document.getElementById('chart-bytes')._fullLayout.yaxis.range")
        assert low <= 0 < 3 * 7176 <= high
        assert "completed" in browser.find_element("id", "summary").text
        assert browser.find_element("id", "problem").get_attribute("hidden")
    finally:
        server.should_exit = True


def test_a_runs_summary_is_its_last_evaluated_value_with_the_best_and_its_round_beside_it():
    from server.dashboard.views import metric_summary

    rounds = [{"round": r, "server_metrics": {"accuracy": a, "f1": 0.1}} for r, a in enumerate((0.5, 0.79, 0.79, 0.78))]
    rounds.append({"round": 4, "server_metrics": {}})  # not evaluated (eval-every)
    assert metric_summary(rounds) == {"metric": "accuracy", "final": 0.78, "final_round": 3, "best": 0.79,
                                      "best_round": 1}
    assert metric_summary([])["final"] is None



def test_the_update_grid_places_each_reply_and_says_why_secagg_withholds_it():
    from server.dashboard.views import update_grid

    replies = [
        {"kind": "train", "round": 1, "partition_id": 0, "node_id": "7", "status": "accepted", "reason": None,
         "norm_vector": 3.0, "norm_head": 4.0, "cosine": 0.9, "weight": 0.5, "metrics": {}, "num_examples": 5},
        {"kind": "train", "round": 2, "partition_id": 1, "node_id": "8", "status": "refused", "reason": "norm-outlier",
         "norm_vector": 3000.0, "norm_head": 4000.0, "cosine": -0.2, "weight": None, "metrics": {}, "num_examples": 5},
        {"kind": "evaluate", "round": 2, "partition_id": 0, "node_id": "7", "status": "accepted", "reason": None,
         "metrics": {}, "num_examples": 5},
    ]
    grid = update_grid(replies, [1, 2], {})
    assert grid["clients"] == ["partition 0", "partition 1"] and grid["rounds"] == [1, 2]
    assert grid["norm"] == [[5.0, None], [None, 5000.0]] and grid["cosine"][0][0] == 0.9
    assert grid["status"] == [["accepted", None], [None, "refused"]] and grid["reason"][1][1] == "norm-outlier"
    assert "sees only the sum" in update_grid(replies, [1, 2], {"secure-aggregation": "secagg+"})["withheld"]


def test_compare_gives_each_run_its_metric_against_rounds_and_cumulative_bytes(small_store):
    from server.dashboard.views import compare, compare_rows

    store = RunStore(small_store)
    other = store.start_run("sst2", "lora", "b", {"alpha": 0.1}, None, None, 2)
    for rnd, accuracy in enumerate((0.5, 0.6, 0.75)):
        store.add_round(other, rnd, {"accuracy": accuracy}, bytes_up=3 * 300_000 if rnd else 0)
    (slash, lora) = compare(store, [1, other])
    assert (slash["method"], lora["method"], lora["alpha"]) == ("slash", "lora", 0.1)
    assert slash["bytes_up"] == [0, 3 * 7176, 6 * 7176] and lora["value"] == [0.5, 0.6, 0.75]
    assert len(compare_rows([slash, lora])) == 6
    client = TestClient(create_app(small_store))
    assert client.get(f"/api/compare?runs=1,{other}").status_code == 200
    assert client.get("/api/compare?runs=1,x").status_code == 404 and client.get("/api/compare?runs=9").status_code == 404
    assert client.get(f"/api/compare.csv?runs=1,{other}").text.startswith("run,task,method,alpha,metric,round")


def test_chromium_shows_a_scaled_clients_refused_updates_in_the_heatmap_and_compares_two_runs(tmp_path, glue_dir,
                                                                                               browser):
    summary = simulate(tmp_path, glue_dir, "--faulty-clients", "0:scaled-1000", "--fraction-train", "1.0",
                       "--num-server-rounds", "2")
    assert summary["status"] == "completed"
    simulate(tmp_path, glue_dir, "--num-server-rounds", "2", "--method", "head")
    server = start_in_thread(tmp_path / "store.sqlite", "127.0.0.1", port := _free_port(), None)
    try:
        _wait(lambda: server.started, 30, "the dashboard")
        browser.get(f"http://127.0.0.1:{port}/runs/1")
        _wait(lambda: browser.execute_script("return document.body.dataset.rounds") == "2", 60, "the charts")
        refused = browser.execute_script(
            "const d = document.getElementById('chart-updates'); const t = d.data.find(t => t.name === 'refused');"
            "return t.x.map((r, i) => [r, t.y[i], t.text[i]]);")
        assert refused == [[1, "partition 0", "norm-outlier"], [2, "partition 0", "norm-outlier"]]
        assert not browser.find_element("id", "chart-updates").get_attribute("hidden")
        table = urllib.request.urlopen(browser.find_element("id", "replies-csv").get_attribute("href")).read().decode()
        header, *rows = table.splitlines()
        assert header.startswith("round,kind,partition_id,node_id,status,reason") and "norm-outlier" in table
        assert sum(row.startswith(("1,train", "2,train")) for row in rows) == 8  # 4 clients, 2 rounds
        labels = browser.execute_script("const d = document.getElementById('chart-labels');"
                                        "return d.hidden ? null : d.data.map(t => t.x.length)")
        assert labels == [4, 4]  # each of the 4 clients' reported counts of SST-2's two labels
        browser.get(f"http://127.0.0.1:{port}/")
        boxes = _wait(lambda: browser.find_elements("css selector", "#runs input[type=checkbox]"), 30, "the runs")
        for box in boxes:
            box.click()
        browser.find_element("id", "compare").click()
        _wait(lambda: browser.execute_script("return document.body.dataset.compared") == "2", 60, "the comparison")
        traces = browser.execute_script("return ['chart-by-round', 'chart-by-bytes'].map(id => "
                                        "document.getElementById(id).data.map(t => t.name))")
        assert all(len(names) == 2 and any("slash" in n for n in names) and any("head" in n for n in names)
                   for names in traces)
    finally:
        server.should_exit = True


def test_label_mix_and_client_epsilon_come_from_the_store_or_say_why_not(tmp_path):
    from server.dashboard.views import client_epsilon, label_mix

    store = RunStore(tmp_path / "s.sqlite")
    run = store.start_run("sst2", "slash", "b", {}, None, None, 2)
    store.set_label_counts(run, {11: [30, 5], 10: [2, 40]}, {10: 0, 11: 1})
    mix = label_mix(store.label_counts(run), {})
    assert mix == {"clients": ["partition 0", "partition 1"], "counts": [[2, 40], [30, 5]], "withheld": None}
    assert "under DP or SecAgg+" in label_mix([], {"dp-epsilon": 8.0})["withheld"]
    assert "reported no label counts" in label_mix([], {"local-loss": "ce"})["withheld"]
    replies = [{"kind": "train", "round": rnd, "partition_id": 0, "node_id": "10", "metrics": {"epsilon": eps}}
               for rnd, eps in ((1, 2.5), (3, 5.0))]
    assert client_epsilon(replies, [1, 2, 3], {"dp-epsilon": 8.0}) == {
        "budget": 8.0, "clients": {"partition 0": [2.5, 2.5, 5.0]}}  # not sampled in round 2: spent stays
