"""The playground page of `dlmprompt serve` (GET /): served from the package's static files, off
with ui=False / --no-ui, the step events it draws, and the page itself in a real headless Chromium
(Playwright) against a real server: a run completes, the canvas was drawn step by step, and the
final text is the native API's for the same prompt and seed.

The browser tests need `pip install -e ".[browser]"` and a Chromium: Debian's (`apt-get install
chromium`, found on PATH or at $DLMPROMPT_CHROMIUM) or the one `playwright install chromium`
downloads. They skip, saying which is missing, otherwise. Screenshots go to $DLMPROMPT_ARTIFACTS
when set, else to pytest's tmp folder; the test prints where.
"""

from __future__ import annotations

import json
import os
import shutil
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

import dlmprompt
from dlmprompt import Prompt, compile, slot
from dlmprompt.serving.playground import STATIC
from dlmprompt.serving.server import background, create_app

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def client(denoiser):  # denoiser, server: the session's embedded model and real server (conftest.py)
    with TestClient(create_app(denoiser, api_key="sekrit")) as c:
        yield c


# ---------------------------------------------------------------------------------------------- the page, served
def test_page_and_static_files_are_served_without_the_api_key(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]  # nothing from elsewhere
    assert 'src="static/playground.js"' in page.text and 'href="static/playground.css"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN: works offline
    for name, media in [("playground.js", "text/javascript"), ("playground.css", "text/css")]:
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(media), name
        assert "http://" not in r.text and "https://" not in r.text, name
    assert client.get("/v1/templates").status_code == 401  # the API stays guarded
    missing = client.get("/static/server.py")
    assert missing.status_code == 404 and "playground.js" in missing.json()["error"]["message"]
    assert client.get("/static/..%2Fserver.py").status_code == 404
    assert "/" not in client.get("/openapi.json").json()["paths"]  # not part of the API's schema


def test_no_ui_gives_the_json_404(denoiser) -> None:
    with TestClient(create_app(denoiser, ui=False)) as c:
        for path in ("/", "/static/playground.js"):
            r = c.get(path)
            assert r.status_code == 404 and r.headers["content-type"] == "application/json", path
            assert set(r.json()["error"]) == {"message", "type", "code"}
        assert c.get("/health").status_code == 200


def test_cli_no_ui_flag(monkeypatch) -> None:
    import dlmprompt.serving.server as server_module
    from dlmprompt.cli import main

    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(server_module, "serve", lambda model, **kw: seen.append(kw))
    assert main(["serve", "--no-ui"]) == 0 and main(["serve"]) == 0
    assert [kw["ui"] for kw in seen] == [False, True]


def test_static_files_are_package_data() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    folder = ROOT / "dlmprompt" / "serving" / "static"
    assert sorted(p.name for p in folder.iterdir()) == sorted(STATIC)
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert all(any(fnmatch(f"static/{n}", g) for g in globs["dlmprompt.serving"]) for n in STATIC)


def test_step_events_carry_what_the_page_draws(client, denoiser) -> None:
    prompt = (
        Prompt("Age: ")
        + slot("age", regex="[0-9]+", max_tokens=3)
        + "\nOK: "
        + slot("ok", choice=["yes", "no"], max_tokens=2)
    )
    program = compile(prompt, denoiser.tokenizer)
    body = {"prompt": prompt.model_dump(mode="json", by_alias=True), "seed": 1, "stream": True}
    steps = []
    with client.stream("POST", "/v1/generate", json=body, headers={"Authorization": "Bearer sekrit"}) as s:
        event = None
        for line in s.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "step":
                steps.append(json.loads(line[5:]))
    assert len(steps) > 1
    tok = denoiser.tokenizer
    for st in steps:
        assert st["slot_of"] == program.layout.slot_of.tolist() and st["slots"] == ["age", "ok"]
        assert len(st["pieces"]) == len(st["canvas"])
        for t, piece in zip(st["canvas"], st["pieces"]):
            assert (piece is None) == (t == tok.mask_id)
            if piece is not None:
                assert piece == tok.decode_bytes([t]).decode("utf-8", errors="replace")
    assert None in steps[0]["pieces"] and None not in steps[-1]["pieces"]


# ---------------------------------------------------------------------------------------------- in a real browser
def _chromium() -> str | None:
    """Debian's Chromium (or $DLMPROMPT_CHROMIUM); None: let Playwright use the one it installed."""
    given = os.environ.get("DLMPROMPT_CHROMIUM")
    if given:
        return given
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the browser tests need Playwright: pip install -e '.[browser]'"
    )
    exe = _chromium()
    if exe is not None and not Path(exe).exists():
        pytest.skip(f"DLMPROMPT_CHROMIUM={exe}: no such file")
    with sync_api.sync_playwright() as p:
        if exe is None and not Path(p.chromium.executable_path).exists():
            pytest.skip("no Chromium: apt-get install chromium, set DLMPROMPT_CHROMIUM, or playwright install chromium")
        b = p.chromium.launch(executable_path=exe, headless=True)
        yield b
        b.close()


@pytest.fixture
def shots(tmp_path, capsys):
    folder = Path(os.environ.get("DLMPROMPT_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)

    def save(page: Any, name: str) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        with capsys.disabled():
            print(f"\nscreenshot: {path}")
        return path

    return save


def _open(browser: Any, url: str) -> tuple[Any, list[str], list[str]]:
    """A page on the playground; the console's errors and the page's uncaught exceptions.

    Each browser test starts its own server inside the test: a server's compile workers are forked
    processes, and one forked after Playwright started holds its driver's pipes, so Playwright
    cannot shut down while that server (the session's, say) still runs."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    console: list[str] = []
    thrown: list[str] = []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: thrown.append(str(e)))
    page.goto(url + "/")
    page.wait_for_selector("body[data-state=ready]", timeout=30_000)
    return page, console, thrown


def _run(page: Any, seed: int) -> None:
    page.fill("#seed", str(seed))
    page.click("#run")
    page.wait_for_selector("body[data-state=done], body[data-state=error]", timeout=120_000)
    assert page.get_attribute("body", "data-state") == "done", page.inner_text("#error")


def _scrub(page: Any, k: int) -> None:
    page.eval_on_selector("#scrub", "(s, k) => { s.value = String(k); s.dispatchEvent(new Event('input')); }", k)


def _drawn_step_by_step(page: Any, steps: int) -> None:
    """One confidence bar per step event; back at step 0 the canvas has masked cells, at the last none."""
    assert steps > 1 and page.locator("#bars .bar").count() == steps
    assert page.evaluate("window.playground.steps.length") == steps
    for k, masked in [(0, True), (steps - 1, False)]:
        _scrub(page, k)
        assert (page.locator("#canvas .cell.masked").count() > 0) is masked, k
    assert page.locator("#canvas .cell.anchor").count() > 0 and page.locator("#canvas .cell.committed").count() > 0


SCHEMA = {"type": "object", "properties": {"age": {"type": "integer"}}}
NESTED = {"properties": {"a": {"type": "integer"}}, "required": ["a"]}
SYNTAX = [  # the README's example, then the edges of the page's slot syntax
    (
        "Name: {{name max=6 regex=[A-Z][a-z]+}}\nCity: {{city}}\nAdult: {{adult choice=yes|no}}\n"
        'Record: {{r json={"type":"object","properties":{"age":{"type":"integer"}}}}}',
        Prompt("Name: ")
        + slot("name", regex="[A-Z][a-z]+", max_tokens=6)
        + "\nCity: "
        + slot("city", max_tokens=8)
        + "\nAdult: "
        + slot("adult", choice=["yes", "no"], max_tokens=8)
        + "\nRecord: "
        + slot("r", schema=SCHEMA),
    ),
    ("{{n tokens=3}}", Prompt(slot("n", tokens=3))),
    ("Y: {{year regex=[0-9]{4}}}!", Prompt("Y: ") + slot("year", regex="[0-9]{4}", max_tokens=8) + "!"),
    (
        '{{ r json={"properties":{"a":{"type":"integer"}},"required":["a"]} max=5 }} end',
        Prompt(slot("r", schema=NESTED, max_tokens=5), " end"),
    ),
]
SYNTAX_ERRORS = [
    ("{{1x}}", "starts with its name"),
    ("{{x colour=red}}", "options are max=N"),
    ("{{x regex=abc", "no closing }}"),
    ("{{x json={bad}}}", "not valid JSON"),
    ('{{x tokens=3 json={"type":"string"}}}', "takes max=N"),
    ("{{x choice=a|b regex=c}}", None),  # the regex is then one of the options: allowed, as written
    ("no slot here", "has no slot"),
]


@pytest.mark.browser
def test_browser_slot_syntax(browser, denoiser) -> None:
    with background(denoiser) as server:  # its own: see _open
        page, console, thrown = _open(browser, server.url)
        for source, prompt in SYNTAX:
            parsed = page.evaluate("src => parsePrompt(src)", source)
            assert Prompt.model_validate(parsed) == prompt, source
        for source, message in SYNTAX_ERRORS:
            got = page.evaluate(
                "src => { try { parsePrompt(src); return null; } catch (e) { return e.message; } }", source
            )
            assert (got is None) if message is None else (message in got), (source, got)
        assert console == [] and thrown == []


WRITTEN = (
    "Meet Ada Lovelace, 36, from London.\n"
    "Name: {{name max=6 regex=[A-Z][a-z]+( [A-Z][a-z]+)?}}\n"
    "Age: {{age max=3 regex=[0-9]{1,3}}}\n"
    "City: {{city max=4}}\n"
    'Record: {{r max=4 json={"type":"object","properties":{"poet":{"type":"boolean"}},"required":["poet"]}}}'
)
SAME = (
    Prompt("Meet Ada Lovelace, 36, from London.\nName: ")
    + slot("name", regex="[A-Z][a-z]+( [A-Z][a-z]+)?", max_tokens=6)
    + "\nAge: "
    + slot("age", regex="[0-9]{1,3}", max_tokens=3)
    + "\nCity: "
    + slot("city", max_tokens=4)
    + "\nRecord: "
    + slot(
        "r", schema={"type": "object", "properties": {"poet": {"type": "boolean"}}, "required": ["poet"]}, max_tokens=4
    )
).with_sampling(temperature=0.8)


@pytest.mark.browser
def test_browser_written_prompt_and_template_match_the_api(browser, denoiser, shots) -> None:
    with background(denoiser) as server:
        page, console, thrown = _open(browser, server.url)
        page.fill("#source", WRITTEN)
        page.fill("#temperature", "0.8")
        _run(page, seed=7)
        sent = json.loads(page.text_content("#request"))
        assert Prompt.model_validate(sent["prompt"]) == SAME  # the slot syntax makes the Python prompt
        api = httpx.post(
            server.url + "/v1/generate",
            json={"prompt": SAME.model_dump(mode="json", by_alias=True), "seed": 7},
            timeout=120,
        ).json()
        assert page.evaluate("window.playground.result.text") == api["text"]
        assert page.text_content("#result-text") == api["text"]
        values = dict(
            zip(
                page.locator("#captures td:first-child").all_inner_texts(),
                page.locator("#captures td:last-child").all_inner_texts(),
            )
        )
        assert {k: json.loads(v) for k, v in values.items()} == {k: c["value"] for k, c in api["captures"].items()}
        _drawn_step_by_step(page, api["steps"])
        shots(page, "playground-written")
        _scrub(page, api["steps"] // 2)
        shots(page, "playground-midway")  # the canvas half filled in, as it was drawn during the run

        page.click("#tab-template")
        page.select_option("#template", "multiple_choice")
        _run(page, seed=3)
        example = dlmprompt.template("multiple_choice").example
        api = httpx.post(
            server.url + "/v1/generate",
            json={"template": "multiple_choice", "variables": example, "seed": 3},
            timeout=120,
        ).json()
        assert json.loads(page.text_content("#request"))["variables"] == example
        assert page.evaluate("window.playground.result.text") == api["text"]
        assert page.locator("#bars .bar").count() == api["steps"]  # a short answer: maybe one step
        shots(page, "playground-template")
        assert console == [] and thrown == []


@pytest.mark.browser
def test_browser_api_key_and_errors_shown(browser, denoiser, shots) -> None:
    with background(denoiser, api_key="sekrit") as srv:
        page, console, thrown = _open(browser, srv.url)
        assert "401" in page.inner_text("#template-description")  # the templates need the key
        page.fill("#api-key", "sekrit")
        page.dispatch_event("#api-key", "change")
        page.wait_for_selector("#template option >> nth=3", state="attached")
        page.fill("#source", "Code: {{code max=3 regex=((}}")
        page.click("#run")
        page.wait_for_selector("body[data-state=error]")
        assert page.inner_text("#error").startswith("HTTP 400 · compile_error:")  # the API's JSON error
        shots(page, "playground-api-error")
        page.fill("#source", "Code: {{code max=3 colour=red}}")
        page.click("#run")
        assert "options are max=N" in page.inner_text("#error")  # refused by the page, before sending
        assert page.inner_text("#status").startswith("not sent")
        page.fill("#source", "Age: {{age max=3 regex=[0-9]+}}")
        _run(page, seed=1)
        assert page.evaluate("window.playground.steps.length") > 1
        assert thrown == [] and all("status of 40" in m for m in console), console  # only the refused requests


@pytest.mark.browser
def test_browser_shows_a_run_that_fails_midway(browser, denoiser) -> None:
    class Failing:  # the embedded model, failing from its third forward pass on
        tokenizer = denoiser.tokenizer
        mask_id = denoiser.mask_id
        device = denoiser.device
        calls = 0

        def __call__(self, ids, att):
            Failing.calls += 1
            if Failing.calls > 2:
                raise RuntimeError("boom")
            return denoiser(ids, att)

    with background(Failing()) as srv:
        page, console, thrown = _open(browser, srv.url)
        page.click("#run")
        page.wait_for_selector("body[data-state=error]", timeout=60_000)
        assert "the run failed on the server" in page.inner_text("#error") and "boom" in page.inner_text("#error")
        assert page.evaluate("window.playground.steps.length") == 2  # the steps that came are drawn
        assert page.locator("#canvas .cell.masked").count() > 0 and console == [] and thrown == []
