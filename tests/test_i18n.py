"""The viewer's words are data (STYLE.md rule 17): one file per language in web/i18n/, each with
exactly the same keys and placeholders, every key the code asks for present, and none of the
words meant for operators. Also: the page's libraries are vendored from npm by both builds."""

from __future__ import annotations

import json
import re

import pytest

from tests.support.browser import LOCALES, WEB, operator_words, texts
from tests.support.fixtures import REPO

CODE = {name: (WEB / name).read_text(encoding="utf-8")
        for name in ("relay-widget.js", "i18n.js", "qr.js", "widget-style.js", "index.html")}
PRIMARY = "pt-BR"


def placeholders(text: str) -> set[str]:
    return set(re.findall(r"\{(\w+)\}", text))


def test_one_file_per_language_and_the_code_knows_them_all() -> None:
    files = sorted(p.stem for p in (WEB / "i18n").glob("*.json"))
    assert files == sorted(LOCALES)
    declared = re.search(r"export const LOCALES = Object\.freeze\((\[[^\]]*\])\)", CODE["i18n.js"])
    assert declared and json.loads(declared.group(1)) == list(LOCALES)
    assert 'DEFAULT_LOCALE = "pt-BR"' in CODE["i18n.js"]


@pytest.mark.parametrize("locale", [lo for lo in LOCALES if lo != PRIMARY])
def test_same_keys_and_placeholders_as_portuguese(locale: str) -> None:
    primary, other = texts(PRIMARY), texts(locale)
    missing = sorted(set(primary) - set(other))
    extra = sorted(set(other) - set(primary))
    assert not missing and not extra, f"{locale}.json: missing {missing}, extra {extra}"
    for key, text in primary.items():
        assert placeholders(other[key]) == placeholders(text), f"{locale}.json {key!r}: placeholders differ"
        assert other[key].strip(), f"{locale}.json {key!r} is empty"


def keys_asked_for() -> set[str]:
    """Every key the page and the widget look up: literal ones, and the ones built from a
    reason code (reason.<code>, hint.<code>)."""
    literal = re.compile(r'"((?:page|widget|state|reason|hint|action|steps|phone|pairing|error|demo|qr|profile)'
                         r'\.[A-Za-z_]+|expires)"')
    found = {m.group(1) for text in CODE.values() for m in literal.finditer(text)}
    listed = re.search(r"REASON_CODES = Object\.freeze\(\[([^\]]*)\]\)", CODE["relay-widget.js"])
    assert listed
    codes = re.findall(r'"(\w+)"', listed.group(1))
    assert "no_qr" in codes and "removed" in codes
    found |= {f"reason.{c}" for c in codes if c != "no_qr"}
    found |= {f"hint.{c}" for c in codes if c != "removed"}
    found |= {f"state.{s}" for s in ("unauthorized", "forbidden")}  # state.${fatal}
    return found


def test_every_key_the_code_asks_for_exists_and_none_is_unused() -> None:
    asked, have = keys_asked_for(), set(texts(PRIMARY))
    assert not sorted(asked - have), f"keys missing from the language files: {sorted(asked - have)}"
    assert not sorted(have - asked), f"keys no code uses: {sorted(have - asked)}"


@pytest.mark.parametrize("locale", LOCALES)
def test_no_operator_words(locale: str) -> None:
    for key, text in texts(locale).items():
        assert not operator_words(text), f"{locale}.json {key!r}: {operator_words(text)} in {text!r}"


def test_the_words_said_before_any_file_loads_are_clean_too() -> None:
    """index.html's <noscript> and "nothing could load" block, and the widget's last resort."""
    page = CODE["index.html"]
    static = re.findall(r'<p lang="[^"]+">([^<]+)</p>', page)
    assert len(static) == 6  # three languages, twice
    last_resort = re.search(r'const LAST_RESORT = "([^"]+)"', CODE["relay-widget.js"])
    assert last_resort
    for text in [*static, last_resort.group(1)]:
        assert not operator_words(text), (text, operator_words(text))


@pytest.mark.parametrize("locale, names", [
    ("pt-BR", ["Aparelhos conectados", "Conectar um aparelho", "Conectar com número de telefone"]),
    ("es", ["Dispositivos vinculados", "Vincular un dispositivo", "Vincular con el número de teléfono"]),
    ("en", ["Linked devices", "Link a device", "Link with phone number instead"]),
])
def test_whatsapps_own_menu_names(locale: str, names: list[str]) -> None:
    words = texts(locale)
    steps = words["steps.linked"] + words["steps.phone"]
    for name in names:
        assert name in steps, (locale, name)
    assert words["phone.open"] == names[2]


def test_vendored_libraries_come_from_npm_in_both_builds() -> None:
    """Each file the page imports from vendor/ is pinned in package.json and the lock, and copied
    by the Makefile's `web` target and the Dockerfile's web stage."""
    imported = set(re.findall(r'from "\./vendor/([^"]+)"', CODE["relay-widget.js"] + CODE["qr.js"]))
    assert imported == {"socket.io.esm.min.js", "uqr.mjs"}
    package = json.loads((WEB / "package.json").read_text())
    lock = json.loads((WEB / "package-lock.json").read_text())
    makefile = (REPO / "Makefile").read_text()
    dockerfile = (REPO / "Dockerfile").read_text()
    for name, (npm, source) in {"socket.io.esm.min.js": ("socket.io-client", "dist/socket.io.esm.min.js"),
                                "uqr.mjs": ("uqr", "dist/index.mjs")}.items():
        version = package["dependencies"][npm]
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{npm} must be pinned exactly"
        assert lock["packages"][f"node_modules/{npm}"]["version"] == version
        assert f"web/node_modules/{npm}/{source}" in makefile and f"web/vendor/{name}" in makefile
        assert f"node_modules/{npm}/{source} vendor/" in dockerfile
        assert name in dockerfile or source.endswith(name)
