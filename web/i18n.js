// i18n.js: the viewer's language for the page and the widget.
//
// Every text a viewer sees lives in web/i18n/<locale>.json, one file per language (STYLE.md
// rule 17): keys in, words out. The code only picks a language and fills in {placeholders}.
// tests/test_i18n.py checks that each file has exactly the same keys and placeholders, and no
// word meant for operators.

// Portuguese first: most people who scan are shop owners in Brazil.
export const LOCALES = Object.freeze(["pt-BR", "es", "en"]);
export const DEFAULT_LOCALE = "pt-BR";

// "es-MX" -> "es", "pt" / "pt-PT" -> "pt-BR", "EN_us" -> "en"; null when none of ours.
export function matchLocale(tag) {
  if (typeof tag !== "string" || !tag.trim()) return null;
  const primary = tag.trim().toLowerCase().split(/[-_]/)[0];
  return LOCALES.find((locale) => locale.toLowerCase().split("-")[0] === primary) || null;
}

/**
 * The first supported language among the candidates, in order: each a tag ("es-AR") or a list
 * of tags (navigator.languages); DEFAULT_LOCALE when none matches.
 *
 *   pickLocale(new URLSearchParams(location.search).get("lang"), navigator.languages)
 */
export function pickLocale(...candidates) {
  for (const candidate of candidates) {
    for (const tag of Array.isArray(candidate) ? candidate : [candidate]) {
      const locale = matchLocale(tag);
      if (locale) return locale;
    }
  }
  return DEFAULT_LOCALE;
}

// One request per language and page, shared by the page and every widget on it. A failed
// load is forgotten, so a later call tries again.
const loading = new Map();

/** The texts of `locale` ({key: text}), from i18n/<locale>.json beside this module. */
export function loadMessages(locale) {
  const chosen = matchLocale(locale) || DEFAULT_LOCALE;
  if (!loading.has(chosen)) {
    const url = new URL(`./i18n/${chosen}.json`, import.meta.url);
    const request = fetch(url, { credentials: "omit" }).then((response) => {
      if (!response.ok) throw new Error(`language file: HTTP ${response.status}`);
      return response.json();
    }).then((texts) => {
      if (!texts || typeof texts !== "object") throw new Error("language file: not an object");
      return Object.freeze({ ...texts });
    });
    request.catch(() => loading.delete(chosen));
    loading.set(chosen, request);
  }
  return loading.get(chosen);
}

/**
 * A lookup function over `texts`: t("state.connected", {name: "Ana"}). A missing key gives ""
 * (never the key itself: keys are not words for viewers); the tests keep keys complete.
 */
export function translator(texts) {
  return (key, params) => {
    const text = texts && typeof texts[key] === "string" ? texts[key] : "";
    if (!params) return text;
    return text.replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
  };
}

/**
 * Put `text` into `node`, with **bold** spans as <strong> (WhatsApp's own menu names stand out
 * in the steps). Text nodes only: nothing is parsed as HTML.
 */
export function setRichText(node, text) {
  const parts = String(text).split("**");
  const children = parts.map((part, i) => {
    if (i % 2 === 0) return document.createTextNode(part);
    const strong = document.createElement("strong");
    strong.textContent = part;
    return strong;
  });
  node.replaceChildren(...children);
}
