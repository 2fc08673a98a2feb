// relay-widget.js: shows the WhatsApp login of one gateway instance, pushed live by the relay
// over Socket.IO: the QR code (drawn here from its text), or a code to type on the phone, and
// what to do at every step, in the viewer's language (pt-BR, es, en).
//
// Embed it in any page (no framework, no build step):
//
//   import { mountRelayWidget } from "https://relay.example.com/static/relay-widget.js";
//   const widget = mountRelayWidget(document.getElementById("whatsapp"), {
//     instance: "shop-42",
//     token: "<viewer JWT minted by your backend>",
//     url: "https://relay.example.com",          // default: location.origin
//     locale: "es",                              // default: the browser's languages, else pt-BR
//     onUpdate: ({ state, reason }) => { if (state === "connected") goOn(); },
//   });
//   // later: widget.destroy();
//
// Stable hooks for automated tests and host apps (README, "Showing the QR in your app"):
//   root:      data-relay-state (one of RELAY_STATES), data-relay-reason (reason.code), data-relay-seq
//   elements:  data-relay-status, data-relay-hint, data-relay-qr (data-relay-qr-kind code|image),
//              data-relay-countdown, data-relay-pairing-code, data-relay-new-qr, data-relay-phone,
//              data-relay-phone-form, data-relay-phone-input, data-relay-phone-error,
//              data-relay-use-qr, data-relay-retry, data-relay-notice, data-relay-demo-scan,
//              data-relay-demo-logout
//
// Viewer-facing words come from i18n/<locale>.json only; the snapshot's reason.message,
// reason.gateway and upstream.detail are for operators and are never shown. The token, the QR
// and the phone number are secrets for as long as they live: nothing here logs them.

import { io } from "./vendor/socket.io.esm.min.js";
import { LOCALES, loadMessages, pickLocale, setRichText, translator } from "./i18n.js";
import { fitQr, pairingGroups, qrSvg } from "./qr.js";
import { injectStyle } from "./widget-style.js";

export { LOCALES, pickLocale };

// Every value data-relay-state can take.
export const RELAY_STATES = Object.freeze([
  "relay-connecting", "reconnecting", "cannot-connect", "load-error", "unauthorized", "forbidden",
  "gateway-down", "not-started", "waiting", "scan", "pairing", "no-qr", "connected", "closed", "refused",
]);
// reason.code values with words of their own; any other code reads as "closed".
export const REASON_CODES = Object.freeze([
  "logged_out", "removed", "qr_limit", "no_qr", "timed_out", "replaced", "scan_failed", "closed",
]);
// The action offered after each close reason (none after "removed": nothing to scan).
const REASON_ACTIONS = {
  logged_out: "action.newQr", qr_limit: "action.newQr", timed_out: "action.newQr",
  scan_failed: "action.newQr", replaced: "action.linkAgain", closed: "action.linkAgain",
};

// Shown only when no language file could be loaded at all (nothing else to say it with).
const LAST_RESORT = "Não foi possível carregar. · No se pudo cargar. · Could not load.";

// A QR lifetime beyond this is not believable: the clock of this device and the relay's
// disagree, so we count from the snapshot's own updatedAt instead.
const MAX_QR_LIFETIME_MS = 180_000;
const SUBSCRIBE_TIMEOUT_MS = 10_000;   // the subscribe ack may take this long before we ask again
const REQUEST_TIMEOUT_MS = 30_000;     // a connect request (the relay itself answers 504 sooner)
const PENDING_MS = 40_000;             // after a 202: how long we wait for the code it asked for
const FAILURES_BEFORE_ERROR = 2;       // failed connection attempts before saying we cannot connect
const NOT_STARTED_AFTER_MS = 2_000;    // an unknown instance the relay may be asking for by itself
const MAX_QR_PX = 360;
const QR_FRAME_PX = 10;               // the frame's padding and border around the drawing
const LANGUAGE_RETRIES_MS = [0, 500, 2_000];  // then the last resort below

let widgets = 0;  // ids for aria wiring, unique per page

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value == null) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) node.append(child);
  return node;
}

// "5511999999999:12@s.whatsapp.net" -> "+5511999999999". The ":12" is a device id.
function phoneFromWuid(wuid) {
  if (typeof wuid !== "string" || !wuid) return "";
  const user = wuid.split("@")[0].split(":")[0];
  return /^\d+$/.test(user) ? `+${user}` : "";
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The texts of `locale`, else of the other languages in order; throws when none loads. */
async function loadTexts(locale) {
  for (const wait of LANGUAGE_RETRIES_MS) {
    await sleep(wait);
    for (const candidate of [locale, ...LOCALES.filter((l) => l !== locale)]) {
      try {
        return { locale: candidate, texts: await loadMessages(candidate) };
      } catch { /* the next language, then the next round */ }
    }
  }
  throw new Error("no language file could be loaded");
}

/**
 * Mount the relay widget inside `element`.
 *
 * @param {HTMLElement} element  container; its content is replaced by the widget
 * @param {object} options
 * @param {string} [options.url]      relay base URL, default location.origin
 * @param {string} options.instance   gateway instance name
 * @param {string} options.token      viewer token (JWT) covering that instance
 * @param {string} [options.locale]   "pt-BR" | "es" | "en" (or a tag like "es-AR"); default: the
 *        browser's languages, else pt-BR
 * @param {object} [options.messages] texts to use instead of the language file's, by key
 * @param {string} [options.demoUrl]  dev only: a demo gateway; adds "Simulate scan" and "Log out"
 * @param {function} [options.onUpdate] called with {state, reason, seq, snapshot} whenever what
 *        the widget shows changes (state is one of RELAY_STATES, snapshot may be null)
 * @returns {{destroy(): void, locale: string}}
 */
export function mountRelayWidget(element, {
  url, instance, token, locale, messages, demoUrl, onUpdate,
} = {}) {
  if (!element || typeof element.appendChild !== "function") {
    throw new TypeError("mountRelayWidget: element must be a DOM element");
  }
  if (!instance || !token) {
    throw new TypeError("mountRelayWidget: instance and token are required");
  }
  const base = String(url || location.origin).replace(/\/+$/, "");
  const instancePath = `${base}/v1/instances/${encodeURIComponent(instance)}`;
  const id = `rw${++widgets}`;
  let lang = pickLocale(locale, typeof navigator !== "undefined" ? navigator.languages : null);
  let t = translator({});
  let texts = null;
  let loadFailed = false;

  injectStyle(element);

  // ---- DOM -------------------------------------------------------------------------------
  const statusEl = el("p", { class: "rw-status rw-tone-busy", "data-relay-status": true, role: "status", "aria-live": "polite" });
  const hintEl = el("p", { class: "rw-hint", "data-relay-hint": true, hidden: true });

  const qrFrame = el("div", { class: "rw-qr", "data-relay-qr": true, role: "img", tabindex: "-1" });
  const scanSteps = el("ol", { class: "rw-steps", "data-relay-steps": true });
  const qrBox = el("div", { class: "rw-qr-box", hidden: true }, qrFrame, scanSteps);

  const pairingLabel = el("p", { class: "rw-pairing-label", id: `${id}-code-label` });
  const codeEl = el("p", { class: "rw-code", "data-relay-pairing-code": true, tabindex: "-1", "aria-describedby": `${id}-code-label` });
  const copyBtn = el("button", { type: "button", class: "rw-button rw-secondary", "data-relay-copy": true });
  const phoneSteps = el("ol", { class: "rw-steps" });
  const pairingBox = el("div", { class: "rw-pairing-box", "data-relay-pairing": true, hidden: true },
    pairingLabel, codeEl, copyBtn, phoneSteps);

  // Not a live region: announcing every second would drown a screen reader.
  const countdownEl = el("p", { class: "rw-countdown", "data-relay-countdown": true, hidden: true });

  const phoneInput = el("input", {
    class: "rw-input", id: `${id}-phone`, type: "tel", inputmode: "tel", autocomplete: "tel",
    "data-relay-phone-input": true, "aria-describedby": `${id}-phone-hint ${id}-phone-error`, maxlength: "32",
  });
  const phoneLegend = el("legend");
  const phoneLabel = el("label", { for: `${id}-phone` });
  const phoneHint = el("p", { class: "rw-field-hint", id: `${id}-phone-hint` });
  const phoneError = el("p", { class: "rw-field-error", id: `${id}-phone-error`, "data-relay-phone-error": true, role: "alert", hidden: true });
  const phoneSubmit = el("button", { type: "submit", class: "rw-button", "data-relay-phone-submit": true });
  const phoneCancel = el("button", { type: "button", class: "rw-link", "data-relay-phone-cancel": true });
  const phoneForm = el("form", { class: "rw-phone-form", "data-relay-phone-form": true, novalidate: true, hidden: true },
    el("fieldset", { class: "rw-phone" }, phoneLegend, phoneLabel, phoneInput, phoneHint,
      phoneError, el("div", { class: "rw-phone-actions" }, phoneSubmit, phoneCancel)));

  const avatarEl = el("img", { class: "rw-avatar", alt: "", referrerpolicy: "no-referrer", hidden: true });
  // WhatsApp picture URLs expire; a broken image is worse than none.
  avatarEl.addEventListener("error", () => { avatarEl.hidden = true; });
  const profileNameEl = el("p", { class: "rw-profile-name" });
  const profileNumberEl = el("p", { class: "rw-profile-number" });
  const profileEl = el("div", { class: "rw-profile", hidden: true }, avatarEl, el("div", {}, profileNameEl, profileNumberEl));

  // Errors of the viewer's own actions are announced assertively.
  const noticeEl = el("p", { class: "rw-notice rw-status rw-tone-error", role: "alert", "data-relay-notice": true, hidden: true });

  const primaryBtn = el("button", { type: "button", class: "rw-button", "data-relay-new-qr": true, hidden: true });
  const useQrBtn = el("button", { type: "button", class: "rw-button rw-secondary", "data-relay-use-qr": true, hidden: true });
  const phoneBtn = el("button", { type: "button", class: "rw-link", "data-relay-phone": true, hidden: true });
  const retryBtn = el("button", { type: "button", class: "rw-button", "data-relay-retry": true, hidden: true });
  const actionsEl = el("div", { class: "rw-actions" }, primaryBtn, retryBtn, useQrBtn, phoneBtn);

  // The demo tools only exist when a demo gateway was given: production pages must not even
  // contain them.
  let demo = null;
  if (demoUrl) {
    const scan = el("button", { type: "button", class: "rw-button", "data-relay-demo-scan": true });
    const logout = el("button", { type: "button", class: "rw-button", "data-relay-demo-logout": true });
    const label = el("span", { class: "rw-demo-label" });
    const group = el("div", { class: "rw-demo", role: "group" }, label, scan, logout);
    demo = { group, label, scan, logout };
    actionsEl.append(group);
  }

  const root = el("section", { class: "rw-root", "data-relay-state": "relay-connecting", lang, "aria-busy": "true" },
    statusEl, hintEl, qrBox, pairingBox, countdownEl, phoneForm, profileEl, noticeEl, actionsEl);
  element.replaceChildren(root);

  // ---- state -----------------------------------------------------------------------------
  let destroyed = false;
  let fatal = null;            // "unauthorized" | "forbidden": we stopped for good
  let socketUp = false;        // transport connected
  let subscribed = false;      // the relay confirmed our subscription since the last connect
  let everSubscribed = false;
  let subscribeError = null;   // code of a failed subscribe (e.g. "unavailable"), while retrying
  let failures = 0;            // failed connection attempts since the last success
  let controls = { connect: false, phone: false };
  let snapshot = null;         // the snapshot being shown
  let unknownSince = null;     // when the shown instance was first seen in state "unknown"
  let qrDeadline = null;       // local clock (Date.now()) at which the shown QR expires
  let qrKey = null;            // identity of the QR the deadline was computed for
  let drawnCode = null;        // the code (or image) the QR frame shows
  let drawnCount = 0;
  let request = null;          // {kind: "qr"|"phone", phase: "sending"|"waiting", afterSeq, timer}
  let phoneOpen = false;
  let lastNumber = null;       // the number of the last pairing request (to ask again)
  let preferQr = false;        // the viewer chose the QR that came with a pairing code
  let focusCode = false;       // move focus to the pairing code when it appears
  let notice = null;           // {key, kind}
  let tickTimer = null;
  let retryTimer = null;
  let lastReported = null;
  let lastViewState = null;
  const aborters = new Set();

  // ---- snapshots -------------------------------------------------------------------------
  // Acks, updates and the 202 of a connect all come through here, so one ordering rule holds:
  // drop anything older than what is shown. An equal seq is accepted: the relay re-sends a
  // snapshot with the same seq to refresh `upstream`.
  function applySnapshot(snap) {
    if (destroyed || fatal || !isObject(snap) || !Number.isFinite(snap.seq)) return false;
    if (snap.instance != null && snap.instance !== instance) return false;
    if (snapshot && snap.seq < snapshot.seq) return false;
    snapshot = snap;
    if (snap.state === "unknown") unknownSince = unknownSince ?? Date.now();
    else unknownSince = null;
    updateQrDeadline(snap);
    if (request && request.phase === "waiting" && answersRequest(snap)) endRequest();
    render();
    return true;
  }

  // Does `snap` end the wait for what the viewer asked? Not a transitional close: Evolution
  // logs the instance out on its way from a QR to a pairing code.
  function answersRequest(snap) {
    if (snap.seq <= request.afterSeq) return false;
    if (snap.state === "open" || (isObject(snap.upstream) && snap.upstream.ok === false)) return true;
    const code = isObject(snap.reason) ? snap.reason.code : null;
    if (code === "no_qr" || code === "removed" || code === "qr_limit" || snap.state === "refused") return true;
    if (!qrIsLive()) return false;
    // A QR for a QR request, a code for a phone request (Evolution sends both with a code).
    return request.kind === "phone" ? !!snap.qr.pairingCode : !snap.qr.pairingCode;
  }

  // Works out, on this device's clock, when the QR in `snap` expires.
  function updateQrDeadline(snap) {
    const qr = isObject(snap.qr) ? snap.qr : null;
    if (!qr || !(qr.code || qr.image || qr.pairingCode)) {
      qrDeadline = null;
      qrKey = null;
      return;
    }
    const key = `${qr.code || qr.image || ""}|${qr.pairingCode || ""}|${qr.expiresAt}`;
    // A refresh of the same QR keeps its deadline: re-deriving it from the arrival time would
    // make an expired code (or the fallback below) live longer.
    if (key === qrKey && qrDeadline !== null) return;
    qrKey = key;
    const now = Date.now();
    const expiresAt = Number(qr.expiresAt);
    if (!Number.isFinite(expiresAt)) {
      qrDeadline = now + MAX_QR_LIFETIME_MS;
      return;
    }
    let remaining = expiresAt - now;
    if (remaining < 0 || remaining > MAX_QR_LIFETIME_MS) {
      // This device's clock is off: use the lifetime the relay gave the code, counted from now
      // (the snapshot just arrived, so it is about as old as the network delay).
      const updatedAt = Number(snap.updatedAt);
      remaining = Number.isFinite(updatedAt) ? expiresAt - updatedAt : 0;
      remaining = Math.min(Math.max(remaining, 0), MAX_QR_LIFETIME_MS);
    }
    qrDeadline = now + remaining;
  }

  function qrIsLive() {
    return !!(snapshot && isObject(snapshot.qr) && qrDeadline !== null && qrDeadline > Date.now()
      && (snapshot.state === "connecting" || snapshot.state === "unknown"));
  }

  // ---- view ------------------------------------------------------------------------------
  // What to show, from (language, fatal error, socket, snapshot, requests, clock): a plain
  // description that render() applies to the DOM. Texts are looked up by key, nothing else.
  function computeView() {
    if (!texts) {
      return loadFailed
        ? { state: "load-error", tone: "error", raw: LAST_RESORT }
        : { state: "relay-connecting", tone: "busy", raw: "" };
    }
    if (fatal) return { state: fatal, tone: "error", status: `state.${fatal}` };
    const live = qrIsLive();
    // Evolution sends a scannable QR along with a pairing code: the viewer may pick either.
    const scannable = live && !!(snapshot.qr.code || snapshot.qr.image);
    const withCode = live && !!snapshot.qr.pairingCode && !(preferQr && scannable);
    const shown = { qr: live && !withCode, pairing: withCode };
    if (!socketUp || !subscribed) {
      if (subscribeError === "unavailable") return { state: "gateway-down", tone: "error", status: "state.serviceDown", ...shown };
      if (failures >= FAILURES_BEFORE_ERROR) {
        return { state: "cannot-connect", tone: "warn", status: "state.cannotConnect", retry: true, ...shown };
      }
      return everSubscribed
        ? { state: "reconnecting", tone: "warn", status: "state.reconnecting", ...shown }
        : { state: "relay-connecting", tone: "busy", status: "state.connecting", ...shown };
    }
    const snap = snapshot;
    if (!snap) return { state: "relay-connecting", tone: "busy", status: "state.connecting" };
    const open = snap.state === "open";
    if (isObject(snap.upstream) && snap.upstream.ok === false) {
      // Say so plainly, never spin; what we still know stays visible below.
      return { state: "gateway-down", tone: "error", status: "state.serviceDown", ...shown, profile: open };
    }
    if (open) return { state: "connected", tone: "ok", status: "state.connected", profile: true };
    if (request && !(request.kind === "qr" && live && !withCode)) {
      // What the viewer asked for is on its way: keep showing progress through the gateway's
      // transitional states (Evolution logs out on its way from a QR to a pairing code).
      return { state: "waiting", tone: "busy", status: request.kind === "phone" ? "state.phoneWaiting" : "state.waiting" };
    }
    const reasonCode = isObject(snap.reason) && typeof snap.reason.code === "string" ? snap.reason.code : null;
    const can = controls.connect;
    if (snap.state === "refused" || (snap.state === "close" && reasonCode === "qr_limit")) {
      return {
        state: "refused", reason: "qr_limit", tone: "warn", status: "reason.qr_limit",
        hint: can ? "hint.qr_limit" : "hint.contact", primary: can && "action.newQr",
      };
    }
    if (snap.state === "close") {
      const code = REASON_CODES.includes(reasonCode) && reasonCode !== "no_qr" ? reasonCode : "closed";
      const action = REASON_ACTIONS[code];
      return {
        state: "closed", reason: reasonCode || "closed", tone: "warn", status: `reason.${code}`,
        hint: can && action ? `hint.${code}` : "hint.contact", primary: can && action,
        phone: !!action && controls.phone,
      };
    }
    // connecting, unknown, or a state this page does not know yet
    if (withCode) {
      return {
        state: "pairing", reason: reasonCode, tone: "info", status: "state.pairing", pairing: true,
        useQr: scannable, otherNumber: controls.phone,
      };
    }
    if (live) return { state: "scan", reason: reasonCode, tone: "info", status: "state.scan", qr: true, phone: controls.phone };
    if (reasonCode === "no_qr") {
      return {
        state: "no-qr", reason: reasonCode, tone: "warn", status: "state.noQr",
        hint: can ? "hint.no_qr" : "hint.contact", primary: can && "action.tryAgain",
      };
    }
    const expired = isObject(snap.qr) && qrDeadline !== null;
    if (expired && snap.qr.pairingCode) {
      return {
        state: "waiting", reason: reasonCode, tone: "warn", status: "state.pairingExpired",
        primary: controls.phone && lastNumber ? "pairing.again" : can && "action.newQr", phone: controls.phone && !lastNumber,
      };
    }
    if (expired) return { state: "waiting", reason: reasonCode, tone: "busy", status: "state.expired" };
    if (snap.state === "unknown" && can) {
      if (Date.now() - (unknownSince ?? 0) >= NOT_STARTED_AFTER_MS) {
        return { state: "not-started", tone: "info", status: "state.notStarted", primary: "action.start", phone: controls.phone };
      }
      return { state: "waiting", tone: "busy", status: "state.waiting", recheckAt: unknownSince + NOT_STARTED_AFTER_MS };
    }
    return { state: "waiting", reason: reasonCode, tone: "busy", status: "state.waiting" };
  }

  function render() {
    if (destroyed) return;
    const view = computeView();
    if (view.state !== lastViewState && ["scan", "pairing", "connected", "closed", "refused", "no-qr"].includes(view.state)) {
      // A definite answer: an earlier action error no longer describes the situation.
      clearNotice();
    }
    if (view.state === "connected" || fatal) phoneOpen = false;
    lastViewState = view.state;
    root.setAttribute("data-relay-state", view.state);
    if (view.reason) root.setAttribute("data-relay-reason", view.reason);
    else root.removeAttribute("data-relay-reason");
    if (snapshot) root.setAttribute("data-relay-seq", String(snapshot.seq));
    else root.removeAttribute("data-relay-seq");
    root.setAttribute("aria-busy", texts || loadFailed ? "false" : "true");

    setText(statusEl, statusText(view));
    statusEl.className = `rw-status rw-tone-${view.tone}`;
    // The phone form, while it is open, says what to do itself; news still shows above it.
    const formFirst = phoneOpen && !request && ["scan", "pairing", "not-started", "closed", "refused", "no-qr"].includes(view.state);
    statusEl.hidden = formFirst;
    hintEl.hidden = !view.hint || formFirst;
    if (view.hint) setText(hintEl, t(view.hint));

    renderQr(view);
    renderPairing(view);
    renderCountdown(view);
    renderProfile(view);
    renderPhoneForm();
    renderActions(view);

    noticeEl.hidden = !notice || (notice.kind === "service" && view.state === "gateway-down");
    if (notice) setText(noticeEl, t(notice.key));

    scheduleTick(view);
    report(view);
  }

  function statusText(view) {
    if (view.raw !== undefined) return view.raw;
    if (view.status !== "state.connected") return t(view.status);
    const name = profileName();
    return name ? t("state.connected", { name }) : t("state.connectedNoName");
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function profileName() {
    const profile = snapshot && isObject(snapshot.profile) ? snapshot.profile : null;
    if (!profile) return "";
    return profile.name ? String(profile.name) : phoneFromWuid(profile.wuid);
  }

  function renderQr(view) {
    const qr = view.qr && !phoneOpen && snapshot && isObject(snapshot.qr) ? snapshot.qr : null;
    qrBox.hidden = !qr;
    if (!qr) {
      // Drop the expired code from the DOM: it must not be scannable any more.
      if (drawnCode !== null) {
        qrFrame.replaceChildren();
        qrFrame.removeAttribute("data-relay-qr-kind");
        drawnCode = null;
      }
      return;
    }
    qrFrame.setAttribute("aria-label", t("qr.alt"));
    const source = qr.code ? `code:${qr.code}` : `image:${qr.image}`;
    if (source !== drawnCode) {
      drawnCode = source;
      drawnCount += 1;
      qrFrame.setAttribute("data-relay-qr-version", String(drawnCount));
      let svg = null;
      if (qr.code) {
        try { svg = qrSvg(qr.code); } catch { svg = null; }  // too long to encode: use the picture
      }
      if (svg) {
        qrFrame.replaceChildren(svg);
        qrFrame.setAttribute("data-relay-qr-kind", "code");
      } else if (qr.image) {
        // The gateway's picture, only when there is no code to draw from.
        qrFrame.replaceChildren(el("img", { src: String(qr.image), alt: "", decoding: "sync" }));
        qrFrame.setAttribute("data-relay-qr-kind", "image");
      } else {
        qrFrame.replaceChildren();
        qrFrame.removeAttribute("data-relay-qr-kind");
      }
    }
    fit();
    renderSteps(scanSteps, "steps.scan");
  }

  function fit() {
    const svg = qrFrame.querySelector("svg");
    if (!svg) return;
    const room = qrBox.clientWidth || root.clientWidth || MAX_QR_PX;
    fitQr(svg, Math.min(room, MAX_QR_PX) - QR_FRAME_PX);
  }

  function renderSteps(list, last) {
    const keys = ["steps.open", "steps.menu", "steps.linked", last];
    const signature = keys.map((k) => t(k)).join("\n");
    if (list.dataset.signature === signature) return;
    list.dataset.signature = signature;
    list.replaceChildren(...keys.map((k) => {
      const item = el("li");
      setRichText(item, t(k));
      return item;
    }));
  }

  function renderPairing(view) {
    const code = view.pairing && !phoneOpen && snapshot && isObject(snapshot.qr) ? snapshot.qr.pairingCode : null;
    pairingBox.hidden = !code;
    if (!code) return;
    const groups = pairingGroups(code);
    const signature = groups.join("-");
    if (codeEl.dataset.code !== signature) {
      codeEl.dataset.code = signature;
      const parts = [];
      groups.forEach((group, i) => {
        if (i > 0) parts.push(el("span", { class: "rw-code-sep", "aria-hidden": "true" }, "-"));
        parts.push(el("span", { class: "rw-code-group" }, group));
      });
      codeEl.replaceChildren(...parts);
      // Read out one character at a time, as it is typed.
      codeEl.setAttribute("aria-label", groups.map((g) => g.split("").join(" ")).join(", "));
    }
    setText(pairingLabel, t("pairing.label"));
    if (!copyBtn.dataset.copied) setText(copyBtn, t("pairing.copy"));
    renderSteps(phoneSteps, "steps.phone");
    if (focusCode) {
      focusCode = false;
      codeEl.focus({ preventScroll: false });
    }
  }

  function renderCountdown(view) {
    const showing = (!qrBox.hidden || !pairingBox.hidden) && qrDeadline !== null && (view.qr || view.pairing);
    countdownEl.hidden = !showing;
    if (!showing) return;
    const seconds = Math.max(0, Math.ceil((qrDeadline - Date.now()) / 1000));
    setText(countdownEl, t("expires", { seconds }));
    countdownEl.setAttribute("data-seconds", String(seconds));
  }

  function renderProfile(view) {
    const profile = view.profile && snapshot && isObject(snapshot.profile) ? snapshot.profile : null;
    profileEl.hidden = !profile;
    if (!profile) return;
    setText(profileNameEl, profile.name ? String(profile.name) : t("profile.account"));
    setText(profileNumberEl, phoneFromWuid(profile.wuid));
    profileNumberEl.hidden = !profileNumberEl.textContent;
    if (profile.pictureUrl) {
      if (avatarEl.getAttribute("src") !== profile.pictureUrl) {
        avatarEl.hidden = false;
        avatarEl.setAttribute("src", profile.pictureUrl);
      }
    } else {
      avatarEl.hidden = true;
      avatarEl.removeAttribute("src");
    }
  }

  function renderPhoneForm() {
    const open = phoneOpen && controls.phone && !fatal;
    phoneForm.hidden = !open;
    if (!open) return;
    setText(phoneLegend, t("phone.open"));
    setText(phoneLabel, t("phone.label"));
    setText(phoneHint, t("phone.example"));
    phoneInput.setAttribute("placeholder", t("phone.placeholder"));
    const sending = !!request && request.kind === "phone" && request.phase === "sending";
    phoneSubmit.disabled = sending;
    phoneSubmit.classList.toggle("rw-busy", sending);
    phoneSubmit.setAttribute("aria-busy", sending ? "true" : "false");
    setText(phoneSubmit, t("phone.submit"));
    setText(phoneCancel, t("phone.cancel"));
  }

  function renderActions(view) {
    // The primary action also stays visible, busy, while its own request is under way.
    const busyQr = !!request && request.kind === "qr";
    const primaryKey = busyQr ? (request.phase === "sending" ? "action.requesting" : "action.waitingCode") : view.primary;
    primaryBtn.hidden = !primaryKey || !!fatal || phoneOpen;
    if (primaryKey) setText(primaryBtn, t(primaryKey));
    primaryBtn.dataset.action = view.primary === "pairing.again" ? "phone-again" : "qr";
    primaryBtn.disabled = busyQr;
    primaryBtn.classList.toggle("rw-busy", busyQr);
    primaryBtn.setAttribute("aria-busy", busyQr ? "true" : "false");

    useQrBtn.hidden = !view.useQr || phoneOpen;
    setText(useQrBtn, t("action.useQr"));
    phoneBtn.hidden = !(view.phone || view.otherNumber) || !controls.phone || phoneOpen || !!request;
    setText(phoneBtn, t(view.otherNumber ? "pairing.otherNumber" : "phone.open"));
    retryBtn.hidden = !view.retry;
    setText(retryBtn, t("action.retryNow"));

    if (demo) {
      demo.group.hidden = !!fatal || !texts;
      demo.group.setAttribute("aria-label", t("demo.label"));
      setText(demo.label, t("demo.label"));
      setText(demo.scan, t("demo.scan"));
      setText(demo.logout, t("demo.logout"));
      demo.scan.hidden = view.state !== "scan" && view.state !== "pairing";
      demo.logout.hidden = view.state !== "connected";
    }
  }

  // Re-render when the shown number of seconds changes, at expiry (which hides the QR), and
  // when an unknown instance has waited long enough to offer "Get a QR code".
  function scheduleTick(view) {
    clearTimeout(tickTimer);
    tickTimer = null;
    if (destroyed) return;
    const now = Date.now();
    let delay = null;
    if (qrDeadline !== null && qrDeadline > now) {
      const left = qrDeadline - now;
      delay = (left % 1000) || 1000;
    }
    if (view.recheckAt && view.recheckAt > now) delay = Math.min(delay ?? Infinity, view.recheckAt - now);
    if (delay !== null) tickTimer = setTimeout(render, delay + 5);
  }

  function report(view) {
    if (typeof onUpdate !== "function") return;
    const key = `${view.state}|${view.reason || ""}|${snapshot ? snapshot.seq : ""}|${snapshot ? snapshot.updatedAt : ""}`;
    if (key === lastReported) return;
    lastReported = key;
    try {
      onUpdate({ state: view.state, reason: view.reason || null, seq: snapshot ? snapshot.seq : null, snapshot });
    } catch (err) {
      // A host bug must not break the widget. The message only, never the payload.
      console.error("relay widget: onUpdate threw:", err && err.message);
    }
  }

  function clearNotice() {
    notice = null;
    noticeEl.hidden = true;
  }

  function showNotice(key, kind = "other") {
    notice = { key, kind };
  }

  // ---- Socket.IO -------------------------------------------------------------------------
  // websocket only: multi-worker relays have no sticky sessions (DESIGN.md).
  // forceNew: each widget owns its connection, so destroy() closes exactly it.
  const socket = io(base, { path: "/socket.io", transports: ["websocket"], auth: { token }, forceNew: true });

  function subscribe() {
    if (destroyed || fatal || !socket.connected) return;
    socket.timeout(SUBSCRIBE_TIMEOUT_MS).emit("subscribe", { instance }, (err, ack) => {
      if (destroyed || fatal) return;
      if (err || !isObject(ack)) {
        subscribeError = "no_answer";
        failures += 1;
        render();
        retrySubscribe();
        return;
      }
      if (ack.ok === true) {
        subscribeError = null;
        subscribed = true;
        everSubscribed = true;
        if (isObject(ack.controls)) controls = { connect: ack.controls.connect === true, phone: ack.controls.phone === true };
        if (!applySnapshot(ack.snapshot)) render();
        return;
      }
      const code = isObject(ack.error) ? ack.error.code : null;
      if (code === "forbidden" || code === "unauthorized" || code === "bad_request") {
        // The link will never work (a foreign token, or no such name): don't hammer the relay.
        stop(code === "forbidden" ? "forbidden" : "unauthorized");
        return;
      }
      subscribeError = typeof code === "string" ? code : "unknown";
      render();
      retrySubscribe();
    });
  }

  function retrySubscribe() {
    clearTimeout(retryTimer);
    retryTimer = setTimeout(subscribe, 3000);
  }

  function stop(reason) {
    fatal = reason;
    clearTimeout(retryTimer);
    endRequest();
    socket.disconnect();
    render();
  }

  socket.on("connect", () => {
    // Also after every reconnect: the relay forgets subscriptions with the connection, and the
    // ack brings the fresh snapshot (no stale QR replay).
    socketUp = true;
    subscribed = false;
    subscribeError = null;
    failures = 0;
    render();
    subscribe();
  });

  socket.on("update", (snap) => {
    if (isObject(snap) && snap.instance != null && snap.instance !== instance) return;
    // An update for our instance means the relay has us subscribed.
    if (socketUp && !subscribed && isObject(snap)) {
      subscribed = true;
      everSubscribed = true;
      subscribeError = null;
    }
    if (!applySnapshot(snap)) render();
  });

  socket.on("connect_error", (err) => {
    if (destroyed) return;
    if (err && err.message === "unauthorized") {
      stop("unauthorized");
      return;
    }
    failures += 1;
    // Transport errors are retried by the Manager; a refusal by the server (socket.active
    // false) is not, so retry it ourselves, gently.
    if (!socket.active) {
      clearTimeout(retryTimer);
      retryTimer = setTimeout(() => { if (!destroyed && !fatal) socket.connect(); }, 5000);
    }
    render();
  });

  socket.on("disconnect", (reason) => {
    socketUp = false;
    subscribed = false;
    clearTimeout(retryTimer);
    if (destroyed || fatal) return;
    if (reason === "io server disconnect") {
      // The relay closed us on purpose (e.g. a restart); socket.io-client does not reconnect by
      // itself then. An expired token ends in connect_error "unauthorized".
      retryTimer = setTimeout(() => { if (!destroyed && !fatal) socket.connect(); }, 1000 + Math.random() * 2000);
    }
    render();
  });

  retryBtn.addEventListener("click", () => {
    if (destroyed || fatal) return;
    failures = 0;
    render();
    socket.disconnect();
    socket.connect();
  });

  // ---- asking for a QR or a pairing code ---------------------------------------------------
  function endRequest() {
    if (!request) return;
    clearTimeout(request.timer);
    request = null;
  }

  async function post(target, options) {
    const aborter = new AbortController();
    aborters.add(aborter);
    const timer = setTimeout(() => aborter.abort(), REQUEST_TIMEOUT_MS);
    try {
      return await fetch(target, { ...options, signal: aborter.signal });
    } finally {
      clearTimeout(timer);
      aborters.delete(aborter);
    }
  }

  // The relay's error codes, in the viewer's words; its `detail` is for operators.
  async function errorKey(response) {
    let code = null;
    try {
      const body = await response.json();
      code = isObject(body) && typeof body.error === "string" ? body.error : null;
    } catch { /* not JSON */ }
    if (code === "bad_number") return "phone.bad";
    if (response.status === 401 || code === "unauthorized") return "state.unauthorized";
    if (response.status === 403 || code === "forbidden") return "state.forbidden";
    if (code === "instance_not_found" || response.status === 404) return "error.notFound";
    if (code === "no_gateway" || response.status === 501) return "error.notAvailable";
    if (code === "rate_limited" || response.status === 429) return "error.tooMany";
    if (response.status >= 500) return "error.service";
    return "error.unknown";
  }

  async function ask(kind, number) {
    if (request || fatal || destroyed) return;
    const afterSeq = snapshot ? snapshot.seq : -Infinity;
    request = { kind, phase: "sending", afterSeq, timer: null };
    clearNotice();
    if (kind === "phone") {
      phoneError.hidden = true;
      phoneInput.removeAttribute("aria-invalid");
      preferQr = false;
    }
    render();
    let key = null;
    try {
      const response = await post(`${instancePath}/connect`, {
        method: "POST",
        headers: {
          Authorization: `Bearer ${token}`, Accept: "application/json",
          ...(number ? { "Content-Type": "application/json" } : {}),
        },
        body: number ? JSON.stringify({ number }) : undefined,
      });
      if (destroyed) return;
      if (!response.ok) {
        key = await errorKey(response);
      } else {
        let snap = null;
        try { snap = await response.json(); } catch { /* a 202 without a body is fine */ }
        if (destroyed) return;
        // Keep showing progress until the snapshot that answers this request arrives (the code
        // comes as an update), but not forever.
        request.phase = "waiting";
        request.afterSeq = isObject(snap) && Number.isFinite(snap.seq) ? Math.max(afterSeq, snap.seq - 1) : afterSeq;
        request.timer = setTimeout(() => {
          if (destroyed) return;
          endRequest();
          showNotice(kind === "phone" ? "phone.noCode" : "error.noNewCode", "service");
          render();
        }, PENDING_MS);
        if (kind === "phone") {
          lastNumber = number;
          phoneOpen = false;
          focusCode = true;
        }
        if (isObject(snap)) applySnapshot(snap);
        // The update carrying the code may have overtaken this response.
        if (request && snapshot && answersRequest(snapshot)) endRequest();
      }
    } catch (err) {
      if (destroyed) return;
      key = err && err.name === "AbortError" ? "error.service" : "error.network";
    }
    if (key) {
      endRequest();
      if (kind === "phone" && phoneOpen && key === "phone.bad") {
        phoneError.hidden = false;
        setText(phoneError, t(key));
        phoneInput.setAttribute("aria-invalid", "true");
        phoneInput.focus();
      } else {
        showNotice(key, key === "error.service" ? "service" : "other");
      }
      if (key === "state.unauthorized") stop("unauthorized");
    }
    render();
  }

  primaryBtn.addEventListener("click", () => {
    if (primaryBtn.dataset.action === "phone-again" && lastNumber) ask("phone", lastNumber);
    else ask("qr");
  });
  // The QR that came with the code: shown here, nothing to ask (asking again for a QR while a
  // pairing is under way would bring back the same pairing).
  useQrBtn.addEventListener("click", () => {
    preferQr = true;
    render();
    qrFrame.focus();
  });

  function openPhone() {
    phoneOpen = true;
    phoneError.hidden = true;
    phoneInput.removeAttribute("aria-invalid");
    render();
    phoneInput.focus();
  }

  function closePhone() {
    phoneOpen = false;
    render();
    if (!phoneBtn.hidden) phoneBtn.focus();
  }

  phoneBtn.addEventListener("click", openPhone);
  phoneCancel.addEventListener("click", closePhone);
  phoneForm.addEventListener("keydown", (event) => {
    if (event.key === "Escape") closePhone();
  });
  phoneForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const number = phoneInput.value.trim();
    if (!number) {
      phoneError.hidden = false;
      setText(phoneError, t("phone.empty"));
      phoneInput.setAttribute("aria-invalid", "true");
      phoneInput.focus();
      return;
    }
    // The relay judges the number (one rule, one place): a 400 bad_number comes back as words.
    ask("phone", number);
  });

  copyBtn.addEventListener("click", async () => {
    const code = codeEl.dataset.code ? codeEl.dataset.code.replace(/-/g, "") : "";
    if (!code) return;
    let copied = false;
    try {
      await navigator.clipboard.writeText(code);
      copied = true;
    } catch {
      // No clipboard API (e.g. a page served over plain http): select the code instead, so
      // "copy" from the phone's own menu works.
      const range = document.createRange();
      range.selectNodeContents(codeEl);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
    }
    if (copied && !destroyed) {
      copyBtn.dataset.copied = "1";
      setText(copyBtn, t("pairing.copied"));
      setTimeout(() => { delete copyBtn.dataset.copied; if (!destroyed) render(); }, 2000);
    }
  });

  // ---- demo (dev only) -------------------------------------------------------------------
  if (demo) {
    const demoBase = String(demoUrl).replace(/\/+$/, "");
    for (const [button, path] of [[demo.scan, "scan"], [demo.logout, "logout"]]) {
      button.addEventListener("click", async () => {
        button.disabled = true;
        button.classList.add("rw-busy");
        clearNotice();
        try {
          const response = await post(`${demoBase}/${path}?instance=${encodeURIComponent(instance)}`, { method: "POST" });
          if (!response.ok && !destroyed) showNotice("demo.failed");
        } catch {
          if (!destroyed) showNotice("demo.failed");
        } finally {
          button.classList.remove("rw-busy");
          button.disabled = false;
          render();
        }
      });
    }
  }

  // Re-fit the QR to whole pixels per module when the room for it changes.
  const resizer = typeof ResizeObserver === "function" ? new ResizeObserver(() => fit()) : null;
  if (resizer) resizer.observe(root);

  // ---- language ----------------------------------------------------------------------------
  loadTexts(lang).then(({ locale: loaded, texts: fileTexts }) => {
    if (destroyed) return;
    lang = loaded;
    texts = { ...fileTexts, ...(isObject(messages) ? messages : {}) };
    t = translator(texts);
    root.setAttribute("lang", lang);
    root.setAttribute("aria-label", t("widget.label"));
    render();
  }, () => {
    if (destroyed) return;
    loadFailed = true;
    render();
  });

  render();

  return {
    get locale() { return lang; },
    destroy() {
      if (destroyed) return;
      destroyed = true;
      clearTimeout(tickTimer);
      clearTimeout(retryTimer);
      endRequest();
      for (const aborter of aborters) aborter.abort();
      if (resizer) resizer.disconnect();
      socket.off();
      socket.disconnect();
      root.remove();
    },
  };
}
