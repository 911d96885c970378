"""Uploads are bounded (issue 18, item 4), over real HTTP against the launched dashboard: another site's page
cannot upload, a request carries a few files at most, and the bytes uploaded per client and in all are capped
for as long as gradio keeps them, so anonymous uploads cannot fill the disk. The app's own upload path (gradio's
client, as a browser's page does it) still works."""

from __future__ import annotations

import httpx
import pytest
from gradio_client import Client, handle_file

from tests.ui_support import app_in_process, demo_suite, settings_for

UPLOAD = 4096  # max_upload_bytes of this app
CLIENT_QUOTA, TOTAL_QUOTA = 6 * UPLOAD, 12 * UPLOAD
UPLOAD_FILES_PER_REQUEST = 4  # guard.UPLOAD_FILES_PER_REQUEST: the page uploads one file at a time


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("uploads")
    settings = settings_for(tmp, demo_suite(tmp_path_factory.mktemp("demo-standin")), max_upload_bytes=UPLOAD,
                            upload_quota_client_bytes=CLIENT_QUOTA, upload_quota_total_bytes=TOTAL_QUOTA,
                            public=True)
    with app_in_process(settings) as (_demo, url, port):
        yield url, port


def upload(url: str, n_files: int = 1, size: int = 1000, client: str = "10.0.0.1", **headers) -> httpx.Response:
    files = [("files", (f"t{i}.txt", b"x" * size, "text/plain")) for i in range(n_files)]
    return httpx.post(url + "gradio_api/upload", files=files, headers={"X-Forwarded-For": client, **headers},
                      timeout=60)


def test_an_upload_from_another_sites_page_is_refused_and_one_from_the_apps_own_page_is_taken(app):
    url, port = app
    foreign = upload(url, client="10.0.1.1", Origin="https://evil.example")
    assert foreign.status_code == 403 and "only from this app's own page" in foreign.text
    assert upload(url, client="10.0.1.1", Origin="null").status_code == 403
    own = upload(url, client="10.0.1.1", Origin=f"http://127.0.0.1:{port}")
    assert own.status_code == 200 and own.json()[0].endswith("t0.txt")


def test_one_request_carries_a_few_files_at_most(app):
    url, _ = app
    many = upload(url, n_files=50, size=10, client="10.0.2.1")
    assert many.status_code == 413 and f"at most {UPLOAD_FILES_PER_REQUEST} files; this one carries 50" in many.text
    assert upload(url, n_files=UPLOAD_FILES_PER_REQUEST, size=10, client="10.0.2.1").status_code == 200


def test_a_file_over_the_size_limit_is_refused(app):
    url, _ = app
    big = upload(url, size=UPLOAD + 100_000, client="10.0.3.1")
    assert big.status_code == 413


def test_one_client_uploads_up_to_its_quota_then_is_told_when_to_try_again(app):
    url, _ = app
    codes = [upload(url, size=UPLOAD - 512, client="10.0.4.1").status_code for _ in range(CLIENT_QUOTA // UPLOAD + 2)]
    assert codes[:CLIENT_QUOTA // UPLOAD - 1] == [200] * (CLIENT_QUOTA // UPLOAD - 1) and codes[-1] == 429
    refused = upload(url, size=UPLOAD - 512, client="10.0.4.1")
    assert refused.status_code == 429 and "from your address" in refused.text and "try again in" in refused.text
    assert upload(url, size=100, client="10.0.4.2").status_code == 200  # another client is not held up


def test_all_clients_together_stop_at_the_overall_quota(app):
    url, _ = app
    codes = [upload(url, size=UPLOAD - 512, client=f"10.0.5.{i}").status_code for i in range(TOTAL_QUOTA // UPLOAD + 2)]
    assert codes[-1] == 429
    refused = upload(url, size=UPLOAD - 512, client="10.0.6.1")
    assert refused.status_code == 429 and "in all" in refused.text


def test_the_apps_own_upload_path_still_runs_a_text_file(tmp_path):
    # a fresh app: the quotas above are spent in the module's one
    settings = settings_for(tmp_path, demo_suite(tmp_path / "demo-standin"), max_upload_bytes=UPLOAD)
    with app_in_process(settings) as (_demo, url, _port):
        text = tmp_path / "words.txt"
        text.write_text("The quick brown fox jumps over the lazy dog. " * 20, encoding="utf-8")
        run = Client(url, verbose=False).predict("demo", [], [], "demo demo:Q2_K", "demo", "", "",
                                                 handle_file(str(text)), "auto", 64, 5, 2, 0, 0, None,
                                                 api_name="/compare")
        assert run["input"]["text"] == text.read_text(encoding="utf-8") and run["run_id"]
