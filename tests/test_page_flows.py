"""What a person does on the page, end to end against the gateway emulators (real HTTP, Socket.IO
and webhooks): link with a phone number instead of the camera, a gateway that cannot reach
WhatsApp, a relay that goes away, a page that cannot load, and the widget in a host app's
shadow root with its own language."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from relay.fakes import EvolutionEmulator, WPPConnectEmulator
from relay.reasons import MESSAGES
from tests.support.browser import (
    browser_fixture,
    decode_qr,
    new_page,
    operator_words,
    page_url,
    readable,
    shot,
    texts,
    watch_states,
)
from tests.support.clients import token
from tests.support.relay import RelayServer, running_relay, settings

pytestmark = pytest.mark.asyncio(loop_scope="module")
browser = browser_fixture()


async def code_shown(page: Any) -> str:
    return re.sub(r"\s", "", await page.locator("[data-relay-pairing-code]").inner_text())


async def visible_text(page: Any, selector: str) -> str:
    return (await page.locator(selector).inner_text()).strip()


async def phone_flow(page: Any, number: str) -> list[str]:
    """From a QR on screen: "link with phone number instead", type the number, ask; returns the
    states the page showed meanwhile."""
    await watch_states(page)
    await page.click("[data-relay-phone]")
    await page.fill("[data-relay-phone-input]", number)
    await page.press("[data-relay-phone-input]", "Enter")
    await page.wait_for_selector('[data-relay-state="pairing"]', timeout=15_000)
    return list(await page.evaluate("() => Object.keys(window.__seen)"))


async def test_phone_number_instead_of_the_camera_evolution(browser: Any) -> None:
    """pt-BR, phone-sized. Evolution ignores ?number= while connecting (protocols §4.3): the
    relay logs the QR pairing out first, and the page keeps showing progress through that."""
    words = texts("pt-BR")
    evo = EvolutionEmulator()
    evo.add_instance("shop")
    await evo.start()
    page = await new_page(browser, locale="pt-BR", width=360, height=860)
    try:
        async with running_relay(evolution_url=evo.url, evolution_apikey=evo.apikey,
                                 auto_connect="on-view") as relay:
            evo.set_webhook(f"{relay.url}/webhooks/evolution")
            await page.goto(page_url(relay.url, "shop", token("shop")))
            await page.wait_for_selector('[data-relay-state="scan"]', timeout=15_000)  # asked by itself
            qr = page.locator("[data-relay-qr]")
            assert decode_qr(await qr.screenshot()) == [evo.instances["shop"].qrcode["code"]]
            assert await visible_text(page, "[data-relay-phone]") == words["phone.open"]

            seen = await phone_flow(page, "+55 (11) 91234-5678")
            assert "closed" not in seen, seen  # the switch's logout is not shown as one
            asked = [r.query.get("number") for r in evo.requests if r.path == "/instance/connect/shop"]
            assert asked[-1] == "5511912345678"
            code = evo.instances["shop"].qrcode["pairingCode"]
            assert len(code) == 8 and await code_shown(page) == f"{code[:4]}-{code[4:]}"
            assert await page.evaluate("document.activeElement.hasAttribute('data-relay-pairing-code')")
            steps = await visible_text(page, "[data-relay-pairing]")
            assert "Conectar com número de telefone" in steps and "Aparelhos conectados" in steps
            seconds = int(await page.locator("[data-relay-countdown]").get_attribute("data-seconds") or 0)
            assert 30 <= seconds <= 45
            assert not await qr.is_visible()
            assert not operator_words(await readable(page))
            await shot(page, "pt-BR", "pairing-evolution")

            # Evolution's code comes with a QR: the viewer may still scan instead.
            await page.click("[data-relay-use-qr]")
            await page.wait_for_selector('[data-relay-state="scan"]', timeout=5_000)
            assert decode_qr(await qr.screenshot()) == [evo.instances["shop"].qrcode["code"]]
            await evo.scan("shop")
            await page.wait_for_selector('[data-relay-state="connected"]', timeout=10_000)
            assert await visible_text(page, "[data-relay-status]") == "Conectado como Example Name"
            await shot(page, "pt-BR", "connected-evolution")
    finally:
        await page.context.close()
        await evo.stop()


async def test_phone_number_instead_of_the_camera_wppconnect(browser: Any) -> None:
    """es: WPPConnect's code comes as "ABCD-EFGH" and is shown as two groups of four."""
    words = texts("es")
    wpp = WPPConnectEmulator()
    await wpp.start()
    page = await new_page(browser, locale="es-MX")
    try:
        async with running_relay(wppconnect_url=wpp.url, wppconnect_secret_key=wpp.secret_key,
                                 auto_connect="on-view") as relay:
            wpp.set_webhook(f"{relay.url}/webhooks/wppconnect")
            await page.goto(page_url(relay.url, "shop", token("shop")))
            await page.wait_for_selector('[data-relay-state="scan"]', timeout=15_000)
            qr = page.locator("[data-relay-qr]")
            await page.wait_for_selector('[data-relay-qr-kind="code"]', timeout=10_000)  # the webhook's code
            assert decode_qr(await qr.screenshot()) == [wpp.sessions["shop"].urlcode]
            assert await visible_text(page, "[data-relay-phone]") == words["phone.open"]

            await phone_flow(page, "52 55 1234 5678")
            sent = [p for kind, event, p in wpp.events if kind == "webhook" and event == "phoneCode"]
            code = sent[-1]["phoneCode"]
            assert re.fullmatch(r"[A-Z0-9]{4}-[A-Z0-9]{4}", code)
            assert await code_shown(page) == code
            assert sent[-1]["phone"] == "525512345678"
            steps = await visible_text(page, "[data-relay-pairing]")
            assert "Vincular con el número de teléfono" in steps and "Dispositivos vinculados" in steps
            assert not operator_words(await readable(page))
            await shot(page, "es", "pairing-wppconnect")

            await wpp.scan("shop")
            await page.wait_for_selector('[data-relay-state="connected"]', timeout=10_000)
    finally:
        await page.context.close()
        await wpp.stop()


@pytest.mark.parametrize("gateway, lang", [("evolution", "en"), ("wppconnect", "pt-BR")])
async def test_a_gateway_that_cannot_reach_whatsapp(browser: Any, gateway: str, lang: str) -> None:
    """No QR within RELAY_QR_WAIT: the page says what happened (no spinner) and "Try again"
    asks again, with progress shown until the answer."""
    words = texts(lang)
    emulator: EvolutionEmulator | WPPConnectEmulator
    emulator = EvolutionEmulator() if gateway == "evolution" else WPPConnectEmulator()
    if isinstance(emulator, EvolutionEmulator):
        emulator.add_instance("shop")
    emulator.whatsapp_reachable = False
    await emulator.start()
    config: dict[str, Any] = (
        {"evolution_url": emulator.url, "evolution_apikey": emulator.apikey}
        if isinstance(emulator, EvolutionEmulator)
        else {"wppconnect_url": emulator.url, "wppconnect_secret_key": emulator.secret_key})
    page = await new_page(browser, locale=lang)
    try:
        async with running_relay(auto_connect="on-view", qr_wait=1.0, probe_interval=0.3, **config) as relay:
            await page.goto(page_url(relay.url, "shop", token("shop")))
            await page.wait_for_selector('[data-relay-state="no-qr"]', timeout=15_000)
            status = page.locator("[data-relay-status]")
            assert await status.inner_text() == words["state.noQr"]
            assert "rw-tone-busy" not in (await status.get_attribute("class") or "")
            assert not operator_words(await readable(page))
            assert MESSAGES["no_qr"] not in await readable(page)
            await shot(page, lang, f"no-qr-{gateway}")
            connects = lambda: sum(r.path in ("/instance/connect/shop", "/api/shop/start-session")  # noqa: E731
                                   for r in emulator.requests)
            before = connects()
            await page.click("[data-relay-new-qr]")  # "Try again"
            await page.wait_for_selector('[data-relay-state="waiting"]', timeout=5_000)
            await page.wait_for_selector('[data-relay-state="no-qr"]', timeout=15_000)
            assert connects() > before
    finally:
        await page.context.close()
        await emulator.stop()


async def test_cannot_connect_is_said_then_recovers(browser: Any) -> None:
    page = await new_page(browser, locale="es-AR")
    base = settings()
    first = RelayServer(base)
    await first.start()
    second: RelayServer | None = None
    try:
        await page.goto(page_url(first.url, "shop", token("shop")))
        await page.wait_for_selector('[data-relay-state="waiting"]', timeout=15_000)
        await first.stop()
        await page.wait_for_selector('[data-relay-state="reconnecting"]', timeout=10_000)
        await page.wait_for_selector('[data-relay-state="cannot-connect"]', timeout=20_000)
        words = texts("es")
        assert await visible_text(page, "[data-relay-status]") == words["state.cannotConnect"]
        assert await visible_text(page, "[data-relay-retry]") == words["action.retryNow"]
        await shot(page, "es", "cannot-connect")
        second = RelayServer(base)  # the relay is back, on the same address
        await second.start()
        await page.click("[data-relay-retry]")
        await page.wait_for_selector('[data-relay-state="waiting"]', timeout=15_000)
    finally:
        await page.context.close()
        if second is not None:
            await second.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def relay() -> AsyncIterator[RelayServer]:
    async with running_relay() as server:
        yield server


async def test_a_page_that_cannot_load_says_so(browser: Any, relay: RelayServer) -> None:
    page = await new_page(browser, locale="pt-BR")
    try:
        # The widget's script fails: the words are there, in the viewer's language.
        await page.route("**/static/relay-widget.js", lambda route: route.abort())
        await page.goto(page_url(relay.url, "shop", token("shop")))
        await page.wait_for_selector('[data-relay-state="load-error"]', timeout=10_000)
        assert await visible_text(page, "[data-relay-status]") == texts("pt-BR")["page.loadFailed"]
        await shot(page, "pt-BR", "load-error")
        # Not even the language file: the page says it in all three.
        await page.route("**/static/i18n/*.json", lambda route: route.abort())
        await page.goto(page_url(relay.url, "shop", token("shop")))
        await page.wait_for_selector('[data-relay-state="load-error"]', timeout=10_000)
        said = await visible_text(page, "[data-relay-status]")
        assert "Não foi possível" in said and "No se pudo" in said and "could not load" in said
        # The widget on its own (a host app's page) with no language file: it says so too.
        await page.unroute("**/static/relay-widget.js")
        await page.evaluate("""async ([tok]) => {
          const { mountRelayWidget } = await import('/static/relay-widget.js');
          mountRelayWidget(document.getElementById('relay'), { instance: 'shop', token: tok });
        }""", [token("shop")])
        await page.wait_for_selector('section[data-relay-state="load-error"]', timeout=10_000)
        said = await visible_text(page, "section [data-relay-status]")
        assert "Não foi possível" in said and "No se pudo" in said and "Could not load" in said
        # A link without its token.
        await page.unroute("**/static/i18n/*.json")
        await page.goto(f"{relay.url}/?instance=shop&lang=en")
        await page.wait_for_selector('[data-relay-state="bad-link"]', timeout=10_000)
        assert await visible_text(page, "[data-relay-status]") == texts("en")["page.badLink"]
        assert await page.evaluate("document.documentElement.lang") == "en"
    finally:
        await page.context.close()


async def host_page(page: Any, relay: RelayServer) -> None:
    """A host app's page: the relay's page without its own widget (an English link that lacks
    its token), emptied, with a style of the host's that must not reach into the widget. (Served
    by the relay itself: Chromium blocks a page fulfilled by the test from reaching 127.0.0.1.)"""
    await page.goto(f"{relay.url}/?lang=en")
    await page.wait_for_selector('[data-relay-state="bad-link"]', timeout=10_000)
    await page.evaluate("""() => {
      document.body.replaceChildren(Object.assign(document.createElement('div'), {id: 'host'}));
      const style = document.createElement('style');
      style.textContent = 'p { color: red; font-size: 40px }';
      document.head.append(style);
    }""")


async def test_widget_in_a_shadow_root_with_its_locale_option(browser: Any, relay: RelayServer) -> None:
    """A host app (English page) mounts the widget in a web component, in Spanish, with one
    text of its own; the host's styles don't reach in, the widget's don't leak out."""
    page = await new_page(browser, locale="en-US")
    try:
        await host_page(page, relay)
        await page.evaluate("""async ([tok]) => {
          const host = document.getElementById('host');
          const shadow = host.attachShadow({mode: 'open'});
          const box = document.createElement('div');
          shadow.append(box);
          const { mountRelayWidget } = await import('/static/relay-widget.js');
          window.widget = mountRelayWidget(box, {
            instance: 'shop', token: tok, locale: 'es-AR', messages: {'state.waiting': 'Un momento…'} });
        }""", [token("shop")])
        await page.wait_for_selector('[data-relay-state="waiting"][lang="es"]', timeout=15_000)
        assert await visible_text(page, "[data-relay-status]") == "Un momento…"
        assert await page.evaluate("document.querySelector('#host').shadowRoot.querySelector('style') !== null")
        assert await page.evaluate("document.head.querySelector('#relay-widget-style') === null")
        assert await page.evaluate("document.documentElement.lang") == "en"  # the host's own
        choices = await page.evaluate("""async () => {
          const { pickLocale } = await import('/static/i18n.js');
          return [pickLocale(null, ['es-AR', 'en']), pickLocale('fr', ['pt-PT']), pickLocale(null, ['de']),
                  pickLocale('EN', []), pickLocale('es-419'), pickLocale(undefined, undefined)];
        }""")
        assert choices == ["es", "pt-BR", "pt-BR", "en", "es", "pt-BR"]
        await page.evaluate("window.widget.destroy()")
        assert await page.evaluate("document.querySelector('#host').shadowRoot.querySelector('[data-relay-state]') === null")
    finally:
        await page.context.close()


async def test_two_widgets_on_one_page(browser: Any, relay: RelayServer) -> None:
    """Each widget is its own: own language, own connection, own form ids."""
    page = await new_page(browser, locale="pt-BR")
    try:
        await host_page(page, relay)
        await page.evaluate("""async ([a, b]) => {
          const { mountRelayWidget } = await import('/static/relay-widget.js');
          for (const [name, tok, locale] of [['one', a, 'en'], ['two', b, undefined]]) {
            const box = document.createElement('div');
            document.body.append(box);
            mountRelayWidget(box, { instance: name, token: tok, locale });
          }
        }""", [token("one"), token("two")])
        await page.wait_for_selector('[data-relay-state="waiting"][lang="en"]', timeout=15_000)
        await page.wait_for_selector('[data-relay-state="waiting"][lang="pt-BR"]', timeout=15_000)
        ids = await page.evaluate("[...document.querySelectorAll('[id]')].map((e) => e.id)")
        assert len(ids) == len(set(ids))
    finally:
        await page.context.close()
