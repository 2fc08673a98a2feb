"""The page in a real headless Chromium (Debian's, through Playwright's ``executable_path``): one
browser per test module, the language files, what a viewer can read on a page, screenshots, and
QR codes read back from them with zxing-cpp."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from .fixtures import REPO

CHROMIUM = os.environ.get("RELAY_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--no-first-run"]
ARTIFACTS = Path(os.environ.get("RELAY_ARTIFACTS", REPO / "artifacts"))
WEB = REPO / "web"
LOCALES = ("pt-BR", "es", "en")

# Words for operators, never for the person who scans (in any language): what the relay is
# made of, protocol words, HTTP status codes, and the shapes of exception text and variable names.
OPERATOR_WORDS = re.compile(
    r"\b(gateways?|relay|redis|webhooks?|instances?|inst[aâ]ncias?|upstream|snapshots?|sockets?|"
    r"tokens?|api|https?|json|endpoints?|backend|servers?|servidor(es)?|evolution|wppconnect|"
    r"baileys|payload|timeout|null|undefined|NaN|exception|traceback|stack|status ?code|"
    r"400|401|403|404|409|429|500|501|502|503|504)\b",
    re.IGNORECASE)
IDENTIFIERS = re.compile(
    r"\b[a-z]+_[a-z_]+\b"            # snake_case: reason codes, error codes
    r"|\b[A-Z]+_[A-Z_]+\b"           # CONSTANT_CASE: RELAY_EVOLUTION_URL
    r"|\b(?!iPhone\b)[a-z]+[A-Z]\w*"  # camelCase: statusReason, pairingCode
    r"|\b\w*(Error|Exception)\b"      # ConnectionError
    r"|\b\w+\.\w+\b")                 # dotted keys left untranslated: state.scan


def operator_words(text: str) -> list[str]:
    """The operator words in ``text`` (empty when a shop owner could read all of it)."""
    return [m.group(0) for m in OPERATOR_WORDS.finditer(text)] + [
        m.group(0) for m in IDENTIFIERS.finditer(text)]


def texts(locale: str) -> dict[str, str]:
    """One language file, as the page loads it."""
    return json.loads((WEB / "i18n" / f"{locale}.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def browser_fixture() -> Any:
    """A module-scoped Chromium fixture named ``browser`` (tests using it run in the module's
    event loop: ``pytestmark = pytest.mark.asyncio(loop_scope="module")``)."""

    @pytest_asyncio.fixture(scope="module", loop_scope="module", name="browser")
    async def _browser() -> AsyncIterator[Any]:
        if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
            pytest.fail(f"Chromium not found at {CHROMIUM}: run `make test` (it installs Debian's chromium)")
        from playwright.async_api import async_playwright

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                yield browser
            finally:
                await browser.close()

    return _browser


async def new_page(browser: Any, *, locale: str = "en-US", dark: bool = False,
                   width: int = 480, height: int = 900) -> Any:
    """A page in its own context (own navigator.languages and colour scheme)."""
    context = await browser.new_context(locale=locale, color_scheme="dark" if dark else "light",
                                        viewport={"width": width, "height": height})
    return await context.new_page()


def page_url(base: str, instance: str, tok: str, lang: str | None = None, **extra: str) -> str:
    url = f"{base}/?instance={instance}&token={tok}"
    if lang:
        url += f"&lang={lang}"
    for key, value in extra.items():
        url += f"&{key}={value}"
    return url


async def readable(page: Any) -> str:
    """Everything a viewer can read or hear: the visible text, labels, placeholders, titles."""
    return await page.evaluate("""() => {
      const parts = [document.title, document.body.innerText];
      const walk = (root) => {
        for (const node of root.querySelectorAll('*')) {
          for (const attr of ['aria-label', 'placeholder', 'title', 'alt']) {
            if (node.getAttribute(attr)) parts.push(node.getAttribute(attr));
          }
          if (node.shadowRoot) { parts.push(node.shadowRoot.textContent); walk(node.shadowRoot); }
        }
      };
      walk(document);
      return parts.join('\\n');
    }""")  # type: ignore[no-any-return]


async def shot(page: Any, lang: str, name: str) -> Path:
    """A full-page screenshot: artifacts/page/<lang>-<name>.png."""
    path = ARTIFACTS / "page" / f"{lang}-{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(path), full_page=True)
    return path


def decode_qr(png: bytes) -> list[str]:
    """The texts of the QR codes in a PNG (a screenshot), read with zxing-cpp."""
    import zxingcpp
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("L")
    return [r.text for r in zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)]


# Records, in the page's own clock (the same wall clock as the test's), when each state appears.
_WATCH_STATES = """
() => {
  window.__seen = {};
  const root = () => document.querySelector('[data-relay-state]');
  const mark = () => {
    const r = root();
    if (r) {
      const s = r.getAttribute('data-relay-state');
      if (!(s in window.__seen)) window.__seen[s] = performance.timeOrigin + performance.now();
    }
  };
  new MutationObserver(mark).observe(document, {subtree: true, attributes: true, childList: true});
  mark();
}
"""


async def watch_states(page: Any) -> None:
    """From now on, ``window.__seen`` maps each data-relay-state the page shows to when it first
    appeared (epoch ms)."""
    await page.evaluate(_WATCH_STATES)
