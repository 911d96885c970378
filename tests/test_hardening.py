"""The hardened launch, checked over real HTTP on 127.0.0.1: the dashboard served with ui.launch_kwargs."""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from pythia_compare.config import ASSETS_DIR
from pythia_compare.web.dashboard import MAX_SPECS_CHARS
from tests.ui_support import PROMPT, app_in_process, demo_suite, launch_chromium, settings_for


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The dashboard in this process (so a test can keep its model pool busy), one run at a time, one waiting."""
    tmp = tmp_path_factory.mktemp("hardening")
    settings = settings_for(tmp, demo_suite(tmp_path_factory.mktemp("demo-standin")))
    with app_in_process(settings, max_queue=1) as (demo, url, port):
        yield demo, settings, url, port


@pytest.fixture(scope="module")
def client(server):
    return Client(server[2], verbose=False)


def call(client: Client, specs: str, prompt: str = PROMPT, text: str = "", **over):
    args = dict(family="demo", quants=[], steps=[], specs=specs, reference="", prompt=prompt, text=text,
                text_file=None, scoring="auto", ctx=512, top_k=5, max_tokens=2, temperature=0, seed=0, owner=None)
    args.update(over)
    return client.predict(*args.values(), api_name="/compare")


@pytest.fixture(scope="module")
def one_run(client):
    """One finished run: it fills the model cache with .gguf files and the run log."""
    return call(client, "demo demo:Q2_K")


def raw(port: int, method: str, path: str, headers: dict | None = None, body: bytes | None = None):
    """One request with the path sent exactly as given (no client-side normalising of ../ or %2e)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.putrequest(method, path, skip_host="Host" in (headers or {}), skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------ files
def test_an_asset_is_served_so_the_refusals_below_mean_something(server):
    status, _, body = raw(server[3], "GET", f"/gradio_api/file={ASSETS_DIR.resolve()}/style.css")
    assert status == 200 and b"pc-banner" in body


def test_nothing_outside_the_assets_is_served(server, one_run):
    _, settings, _, port = server
    ggufs = sorted(settings.home.rglob("*.gguf"))
    assert ggufs and settings.db_path.is_file()
    assets = ASSETS_DIR.resolve()
    demo_file = next(p for p in sorted(settings.demo_dir.rglob("*")) if p.is_file())
    paths = [str(settings.db_path), str(ggufs[0]), str(demo_file), "/etc/passwd", "//etc/passwd",
             "../../../../../../etc/passwd", "%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
             "%2E%2E%2F%2E%2E%2F%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", "..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
             f"{assets}/../pythia_compare/config.py", f"{assets}/%2e%2e/pythia_compare/config.py",
             f"{assets}/..%2fpythia_compare%2fconfig.py", urllib.parse.quote(str(settings.db_path), safe=""),
             "http://127.0.0.1:9/x", f"http://127.0.0.1:{port}/config", "https://example.com/"]
    for p in paths:
        status, _, body = raw(port, "GET", "/gradio_api/file=" + p)
        assert status in (403, 404), (p, status)
        assert b"root:" not in body and b"SQLite" not in body and b"GGUF" not in body, p


def test_a_runs_downloads_are_made_on_request_from_the_run_log_and_anything_else_gets_404(server, one_run):
    import io
    import zipfile

    from pythia_compare.runs.export import run_to_csv
    from pythia_compare.runs.store import RunStore

    port, rid = server[3], one_run["run_id"]
    stored = RunStore(server[1].db_path).get(rid)
    status, headers, body = raw(port, "GET", f"/pc-download/{rid}.json")
    assert status == 200 and headers["content-type"].startswith("application/json")
    assert headers["content-disposition"] == f'attachment; filename="pythia-compare-{rid}.json"'
    assert json.loads(body.decode("utf-8")) == stored
    status, headers, body = raw(port, "GET", f"/pc-download/{rid}.zip")
    assert status == 200 and headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(body)) as z:
        assert z.read("tokens.csv").decode("utf-8") == run_to_csv(stored)
    for name, says in ((f"{rid[:-1]}Z.json", "no stored run has the id"), ("nope.json", "no stored run has the id"),
                       (f"{rid}.exe", "a run's downloads are <run id>.json and <run id>.zip"),
                       (rid, "a run's downloads are"), ("%2e%2e.json", "no stored run has the id"),
                       ("%2e%2e%2fruns.db.json", "Not Found"), ("..%2f..%2fetc%2fpasswd", "Not Found"),
                       ("../runs.db", "Not Found")):
        status, _, body = raw(port, "GET", f"/pc-download/{name}")
        assert status == 404 and says in body.decode("utf-8"), (name, body[:200])


def test_an_over_size_upload_is_refused_and_a_small_one_taken(server):
    port, limit = server[3], server[1].max_upload_bytes

    def upload(n: int):
        body = (b"--BOUNDARY\r\nContent-Disposition: form-data; name=\"files\"; filename=\"t.txt\"\r\n"
                b"Content-Type: text/plain\r\n\r\n" + b"a" * n + b"\r\n--BOUNDARY--\r\n")
        return raw(port, "POST", "/gradio_api/upload",
                   {"Content-Type": "multipart/form-data; boundary=BOUNDARY"}, body)

    assert upload(100)[0] == 200
    status, _, body = upload(limit + 1)
    assert status == 413, body


def test_a_request_body_past_every_cap_is_refused_before_it_is_read(server):
    from pythia_compare.web.guard import max_body_bytes

    port, limit = server[3], max_body_bytes(server[1])
    status, _, _ = raw(port, "POST", "/gradio_api/queue/join", {"Content-Type": "application/json"},
                       b'{"data": ["' + b"x" * limit + b'"]}')
    assert status == 413
    assert raw(port, "POST", "/gradio_api/queue/join", {"Content-Type": "application/json"}, b"{}")[0] == 422


def test_a_server_file_named_as_the_text_file_is_not_read(server, tmp_path):
    """A raw API call (gradio_client would upload the file itself) naming a file the server can read."""
    demo, _, url, _ = server
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET words", encoding="utf-8")
    data = _args("demo demo:Q2_K")
    data[7] = {"path": str(secret), "meta": {"_type": "gradio.FileData"}}
    messages = join_and_listen(url, demo, data, "s3cret")
    assert messages[-1]["msg"] == "process_completed" and messages[-1]["success"] is False
    assert "TOPSECRET" not in json.dumps(messages) and str(tmp_path) not in json.dumps(messages)


def join_and_listen(url: str, demo, data: list, session: str) -> list[dict]:
    """POST /queue/join for the compare event, then read its server-sent events to the end."""
    body = {"data": data, "fn_index": _compare_index(demo), "session_hash": session, "event_data": None,
            "trigger_id": None}
    joined = httpx.post(url + "gradio_api/queue/join", json=body, timeout=60)
    assert joined.status_code == 200, joined.text
    out = []
    with httpx.stream("GET", url + "gradio_api/queue/data", params={"session_hash": session}, timeout=300) as st:
        for line in st.iter_lines():
            if line.startswith("data:"):
                out.append(json.loads(line[5:]))
                if out[-1].get("msg") == "process_completed":
                    return out
    return out


# ------------------------------------------------------------------------------------------ input caps
def test_input_caps_hold_for_a_client_that_skips_the_browser(server, client):
    settings = server[1]
    with pytest.raises(AppError, match=f"limit is {settings.max_prompt_chars}"):
        call(client, "demo demo:Q2_K", prompt="x" * (settings.max_prompt_chars + 1))
    with pytest.raises(AppError, match=f"limit is {settings.max_text_chars}"):
        call(client, "demo demo:Q2_K", text="x" * (settings.max_text_chars + 1))
    with pytest.raises(AppError, match=f"limit is {MAX_SPECS_CHARS}"):
        call(client, "demo " * (MAX_SPECS_CHARS // 5 + 1))
    with pytest.raises(AppError, match="limit is 8"):
        call(client, " ".join(f"demo:{q}" for q in ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_0", "Q4_K_M", "Q4_0",
                                                   "Q3_K_M", "Q2_K")))


def test_errors_reaching_a_client_carry_no_file_paths(server, client, tmp_path):
    with pytest.raises(AppError) as e:
        call(client, f"demo {tmp_path}/nowhere/model.gguf")
    assert "model.gguf" in str(e.value) and str(tmp_path) not in str(e.value)


# ------------------------------------------------------------------------------------------ endpoints
@pytest.mark.parametrize("host", [None, "pythia-compare.hf.space"])
def test_other_sites_get_no_cors_grant(server, host):
    port = server[3]
    headers = {"Origin": "https://evil.example", **({"Host": host} if host else {})}
    for method, path, extra in [("GET", "/config", {}), ("GET", "/gradio_api/info", {}),
                                ("OPTIONS", "/gradio_api/queue/join", {"Access-Control-Request-Method": "POST",
                                                                       "Access-Control-Request-Headers": "content-type"}),
                                ("POST", "/gradio_api/queue/join", {"Content-Type": "application/json"})]:
        status, got, _ = raw(port, method, path, {**headers, **extra}, b"{}" if method == "POST" else None)
        assert not any(k.startswith("access-control-allow") for k in got), (method, path, host, got)


def test_no_mcp_server_no_monitoring_and_no_gradio_run_history(server):
    port = server[3]
    for path in ("/gradio_api/mcp/sse", "/gradio_api/mcp/schema", "/gradio_api/mcp/", "/gradio_api/runs"):
        assert raw(port, "GET", path)[0] == 404, path
    for path in ("/monitoring", "/monitoring/summary", "/monitoring/anything", "/gradio_api/monitoring"):
        status, _, body = raw(port, "GET", path)
        assert status in (403, 404) and b"analytics" not in body.lower(), path
    config = json.loads(raw(port, "GET", "/config")[2])
    assert config["run_history"] is False and "runs" not in config["footer_links"] and not config["mcp_server"]


def test_the_api_lists_only_the_compare_sweep_and_notebook_endpoints(client):
    assert list(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == [
        "/compare", "/sweep", "/notebook"]


# ------------------------------------------------------------------------------------------ busy
def wait_for(condition, what: str, deadline_s: float = 300.0) -> None:
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def test_a_full_queue_says_busy_try_again_instead_of_hanging(server, one_run):
    """One run holds the only slot (its models wait on the pool, kept busy here), one waits, the next is refused."""
    from gradio_client.utils import Status
    from playwright.sync_api import sync_playwright

    demo, _, url, port = server
    pool_lock = demo.handlers.pool._lock  # the pool's own lock: a run needing a model waits for it
    pool_lock.acquire()
    try:
        running = Client(url, verbose=False).submit(*_args("demo demo:Q2_K"), api_name="/compare")
        wait_for(lambda: running.status().code in (Status.PROCESSING, Status.PROGRESS, Status.ITERATING),
                 "the first run to start")
        waiting = Client(url, verbose=False).submit(*_args("demo demo:Q2_K"), api_name="/compare")
        wait_for(lambda: len(demo._queue) == 1, "the second run to wait in the queue")
        status, _, body = raw(port, "POST", "/gradio_api/queue/join", {"Content-Type": "application/json"},
                              json.dumps({"data": _args("demo demo:Q2_K"), "fn_index": _compare_index(demo),
                                          "session_hash": "h4rdening", "event_data": None,
                                          "trigger_id": None}).encode())
        assert status == 503 and b"Queue is full" in body
        with pytest.raises(Exception, match="try again"):
            Client(url, verbose=False).predict(*_args("demo demo:Q2_K"), api_name="/compare")
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page()
            page.goto(url)
            page.locator("#pc-run").click()
            page.get_by_text("busy", exact=False).first.wait_for(timeout=60_000)
            assert "try again" in page.get_by_text("busy", exact=False).first.inner_text().lower()
            browser.close()
    finally:
        pool_lock.release()
    assert running.result()["run_id"] and waiting.result()["run_id"]  # both finish once the pool is free


def _args(specs: str) -> list:
    return ["demo", [], [], specs, "", PROMPT, "", None, "auto", 512, 5, 2, 0, 0, None]


def _compare_index(demo) -> int:
    return next(i for i, fn in demo.fns.items() if fn.api_name == "compare")
