// relay-widget.js: shows a WhatsApp login QR code and the connection state of one
// gateway instance, pushed live by the relay over Socket.IO.
//
// Embed it in any page (no framework, no build step):
//
//   import { mountRelayWidget } from "https://relay.example.com/static/relay-widget.js";
//   const widget = mountRelayWidget(document.getElementById("whatsapp"), {
//     instance: "shop-42",
//     token: "<viewer JWT minted by your backend>",
//     url: "https://relay.example.com",          // default: location.origin
//     onUpdate: ({ state, snapshot }) => { if (state === "connected") goOn(); },
//   });
//   // later: widget.destroy();
//
// Stable hooks for automated tests (see DESIGN.md / README):
//   root:      data-relay-state, data-relay-seq
//   elements:  data-relay-status, data-relay-qr, data-relay-countdown,
//              data-relay-new-qr, data-relay-demo-scan
//
// The token and the QR are secrets for as long as they live: nothing here logs them.

import { io } from "./vendor/socket.io.esm.min.js";

// Every value data-relay-state can take.
export const RELAY_STATES = Object.freeze([
  "relay-connecting", "reconnecting", "unauthorized", "forbidden", "gateway-down",
  "waiting", "scan", "connected", "closed", "refused",
]);

// A QR lifetime beyond this is not believable: the clock of this device and the
// relay's disagree, so we count from the snapshot's own updatedAt instead.
const MAX_QR_LIFETIME_MS = 120_000;
// How long the subscribe ack may take before we ask again.
const SUBSCRIBE_TIMEOUT_MS = 10_000;
// How long the "New QR" request may take (the relay itself answers 504 sooner).
const CONNECT_TIMEOUT_MS = 30_000;
// After a successful "New QR" request, how long the button keeps showing progress
// while we wait for the snapshot that carries the new code.
const CONNECT_PENDING_MS = 30_000;

const STYLE_ID = "relay-widget-style";
const STYLE = `
.rw-root {
  --rw-fg: #1b1f23; --rw-muted: #57606a; --rw-bg: #ffffff; --rw-border: #d0d7de;
  --rw-accent: #128c7e; --rw-accent-fg: #ffffff;
  --rw-warn-bg: #fff8c5; --rw-warn-fg: #4d3800; --rw-warn-border: #d4a72c;
  --rw-err-bg: #ffebe9; --rw-err-fg: #82071e; --rw-err-border: #ff8182;
  --rw-ok-bg: #dafbe1; --rw-ok-fg: #0a3622; --rw-ok-border: #4ac26b;
  box-sizing: border-box; display: flex; flex-direction: column; align-items: center;
  gap: 1rem; width: 100%; max-width: 32rem; margin: 0 auto; padding: 1rem;
  font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--rw-fg); text-align: center;
}
@media (prefers-color-scheme: dark) {
  .rw-root {
    --rw-fg: #e6edf3; --rw-muted: #9ea7b3; --rw-bg: #0d1117; --rw-border: #30363d;
    --rw-accent: #25d366; --rw-accent-fg: #04210f;
    --rw-warn-bg: #3b2e00; --rw-warn-fg: #f8e3a1; --rw-warn-border: #9e6a03;
    --rw-err-bg: #490202; --rw-err-fg: #ffdcd7; --rw-err-border: #da3633;
    --rw-ok-bg: #033a16; --rw-ok-fg: #aff5b4; --rw-ok-border: #2ea043;
  }
}
.rw-root *, .rw-root *::before, .rw-root *::after { box-sizing: inherit; }
.rw-root [hidden] { display: none !important; }
.rw-status {
  margin: 0; padding: .75rem 1rem; border-radius: .5rem; width: 100%;
  border: 1px solid transparent; font-weight: 600;
}
.rw-tone-info { color: var(--rw-fg); }
.rw-tone-busy::before {
  content: ""; display: inline-block; width: .9em; height: .9em; margin-right: .5em;
  vertical-align: -.1em; border: 2px solid currentColor; border-right-color: transparent;
  border-radius: 50%; animation: rw-spin .9s linear infinite;
}
.rw-tone-warn { background: var(--rw-warn-bg); color: var(--rw-warn-fg); border-color: var(--rw-warn-border); }
.rw-tone-error { background: var(--rw-err-bg); color: var(--rw-err-fg); border-color: var(--rw-err-border); }
.rw-tone-ok { background: var(--rw-ok-bg); color: var(--rw-ok-fg); border-color: var(--rw-ok-border); }
.rw-qr-box { display: flex; flex-direction: column; align-items: center; gap: .5rem; }
.rw-qr {
  /* Large and crisp: the PNG is small, so scale it without smoothing. The white
     frame is the quiet zone phones need, also in dark mode. */
  display: block; width: min(80vw, 360px); height: min(80vw, 360px);
  image-rendering: pixelated; image-rendering: crisp-edges;
  background: #fff; padding: 12px; border-radius: .5rem; border: 1px solid var(--rw-border);
  object-fit: contain;
}
.rw-hint { margin: 0; color: var(--rw-muted); }
.rw-countdown { margin: 0; font-variant-numeric: tabular-nums; color: var(--rw-muted); }
.rw-pairing { margin: 0; }
.rw-pairing code {
  font: 700 1.25em/1.2 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  letter-spacing: .08em; padding: .1em .35em; border-radius: .25rem;
  border: 1px solid var(--rw-border); user-select: all;
}
.rw-profile { display: flex; align-items: center; gap: .75rem; text-align: left; }
.rw-avatar { width: 56px; height: 56px; border-radius: 50%; object-fit: cover; background: var(--rw-border); }
.rw-profile-name { margin: 0; font-weight: 600; }
.rw-profile-number { margin: 0; color: var(--rw-muted); font-variant-numeric: tabular-nums; }
.rw-actions { display: flex; flex-direction: column; align-items: center; gap: 1rem; }
.rw-button {
  font: inherit; font-weight: 600; min-height: 44px; padding: .5rem 1.25rem; cursor: pointer;
  border-radius: .5rem; border: 1px solid var(--rw-accent); background: var(--rw-accent); color: var(--rw-accent-fg);
}
.rw-button:disabled { opacity: .7; cursor: progress; }
.rw-button:focus-visible { outline: 3px solid var(--rw-accent); outline-offset: 2px; }
.rw-button.rw-busy::before {
  content: ""; display: inline-block; width: .9em; height: .9em; margin-right: .5em; vertical-align: -.1em;
  border: 2px solid currentColor; border-right-color: transparent; border-radius: 50%;
  animation: rw-spin .9s linear infinite;
}
.rw-demo {
  display: flex; flex-direction: column; align-items: center; gap: .35rem;
  padding: .5rem .75rem; border: 2px dashed var(--rw-warn-border); border-radius: .5rem;
}
.rw-demo-label { font-size: .8rem; text-transform: uppercase; letter-spacing: .06em; color: var(--rw-muted); }
.rw-demo .rw-button { background: transparent; color: var(--rw-fg); border-color: var(--rw-warn-border); }
.rw-notice { margin: 0; width: 100%; }
@keyframes rw-spin { to { transform: rotate(360deg); } }
@media (prefers-reduced-motion: reduce) {
  .rw-tone-busy::before, .rw-button.rw-busy::before { animation: none; }
}
`;

// Style sheets are injected once per document (or per shadow root, so the widget
// also works inside a web component).
const styledRoots = new WeakSet();
function injectStyle(element) {
  const root = element.getRootNode ? element.getRootNode() : document;
  const target = root instanceof ShadowRoot ? root : document.head || document.documentElement;
  const key = root instanceof ShadowRoot ? root : document;
  if (styledRoots.has(key)) return;
  if (!(key === document && document.getElementById(STYLE_ID))) {
    const style = document.createElement("style");
    style.id = STYLE_ID;
    style.textContent = STYLE;
    target.appendChild(style);
  }
  styledRoots.add(key);
}

// Small DOM helper: el("p", {class: "x", "data-y": ""}, "text", child, …)
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
  return /^\d+$/.test(user) ? `+${user}` : user;
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/**
 * Mount the relay widget inside `element`.
 *
 * @param {HTMLElement} element  container; its content is replaced by the widget
 * @param {object} options
 * @param {string} [options.url]      relay base URL, default location.origin
 * @param {string} options.instance   gateway instance name
 * @param {string} options.token      viewer token (JWT) covering that instance
 * @param {string} [options.demoUrl]  dev only: a demo gateway; adds a "Simulate scan" button
 * @param {function} [options.onUpdate] called with {state, seq, snapshot} whenever what
 *        the widget shows changes (state is one of RELAY_STATES, snapshot may be null)
 * @returns {{destroy(): void}}
 */
export function mountRelayWidget(element, { url, instance, token, demoUrl, onUpdate } = {}) {
  if (!element || typeof element.appendChild !== "function") {
    throw new TypeError("mountRelayWidget: element must be a DOM element");
  }
  if (!instance || !token) {
    throw new TypeError("mountRelayWidget: instance and token are required");
  }
  const base = String(url || location.origin).replace(/\/+$/, "");
  const instancePath = `${base}/v1/instances/${encodeURIComponent(instance)}`;

  injectStyle(element);

  // ---- DOM -------------------------------------------------------------------------
  const statusEl = el("p", { class: "rw-status", "data-relay-status": true, role: "status", "aria-live": "polite" });
  const qrImg = el("img", { class: "rw-qr", "data-relay-qr": true, alt: "QR code to link WhatsApp", width: 360, height: 360, decoding: "sync" });
  const qrHint = el("p", { class: "rw-hint" });
  // Not a live region: announcing every second would drown a screen reader.
  const countdownEl = el("p", { class: "rw-countdown", "data-relay-countdown": true });
  const pairingCodeEl = el("code");
  const pairingEl = el("p", { class: "rw-pairing" }, "Or enter this code on your phone: ", pairingCodeEl);
  const qrBox = el("div", { class: "rw-qr-box", hidden: true }, qrImg, qrHint, countdownEl, pairingEl);

  const avatarEl = el("img", { class: "rw-avatar", alt: "", referrerpolicy: "no-referrer", hidden: true });
  // WhatsApp picture URLs expire; a broken image is worse than none.
  avatarEl.addEventListener("error", () => { avatarEl.hidden = true; });
  const profileNameEl = el("p", { class: "rw-profile-name" });
  const profileNumberEl = el("p", { class: "rw-profile-number" });
  const profileEl = el("div", { class: "rw-profile", hidden: true }, avatarEl, el("div", {}, profileNameEl, profileNumberEl));

  const newQrBtn = el("button", { type: "button", class: "rw-button", "data-relay-new-qr": true, hidden: true }, "New QR");
  const actionsEl = el("div", { class: "rw-actions" }, newQrBtn);

  // The demo button only exists when a demo gateway was given: production pages
  // must not even contain it.
  let demoBtn = null;
  let demoEl = null;
  if (demoUrl) {
    demoBtn = el("button", { type: "button", class: "rw-button", "data-relay-demo-scan": true }, "Simulate scan (demo)");
    demoEl = el("div", { class: "rw-demo", role: "group", "aria-label": "Developer demo tools" },
      el("span", { class: "rw-demo-label" }, "Dev only — demo gateway"), demoBtn);
    actionsEl.append(demoEl);
  }

  // Errors of user actions (New QR, demo) are announced assertively.
  const noticeEl = el("p", { class: "rw-notice rw-status rw-tone-error", role: "alert", hidden: true });

  const root = el("section", { class: "rw-root", "aria-label": "WhatsApp login", "data-relay-state": "relay-connecting" },
    statusEl, qrBox, profileEl, noticeEl, actionsEl);
  element.replaceChildren(root);

  // ---- state -----------------------------------------------------------------------
  let destroyed = false;
  let fatal = null;          // "unauthorized" | "forbidden": we stopped for good
  let socketUp = false;      // transport connected
  let subscribed = false;    // the relay confirmed our subscription since the last connect
  let everSubscribed = false;
  let subscribeError = null; // message of a failed (non-forbidden) subscribe, while retrying
  let snapshot = null;       // the snapshot being shown
  let qrDeadline = null;     // local clock (Date.now()) at which the shown QR expires
  let qrKey = null;          // identity of the QR the deadline was computed for
  let pending = null;        // {afterSeq, timer} while a "New QR" request waits for its code
  let busy = false;          // "New QR" HTTP request in flight
  let tickTimer = null;
  let retryTimer = null;
  let lastReported = null;
  let lastViewState = null;
  const aborters = new Set();

  let noticeDetail = null;   // the relay's error detail inside the notice, if any
  function clearNotice() {
    noticeEl.hidden = true;
    noticeEl.textContent = "";
    noticeDetail = null;
  }
  function showNotice(text, detail = null) {
    noticeEl.textContent = text;
    noticeEl.hidden = false;
    noticeDetail = detail;
  }

  // ---- snapshots -------------------------------------------------------------------
  // Acks, updates and the 202 of "New QR" all come through here, so one ordering
  // rule holds: drop anything older than what is shown. Equal seq is accepted
  // because the relay re-sends a snapshot with the same seq to refresh `upstream`.
  function applySnapshot(snap) {
    if (destroyed || fatal || !isObject(snap) || !Number.isFinite(snap.seq)) return false;
    if (snap.instance != null && snap.instance !== instance) return false;
    if (snapshot && snap.seq < snapshot.seq) return false;
    snapshot = snap;
    updateQrDeadline(snap);
    if (pending && (snap.seq > pending.afterSeq || snap.state === "open" || qrIsLive())) {
      endPending();
    }
    render();
    return true;
  }

  // Works out, on this device's clock, when the QR in `snap` expires.
  function updateQrDeadline(snap) {
    const qr = isObject(snap.qr) ? snap.qr : null;
    if (!qr || !(qr.code || qr.image)) {
      qrDeadline = null;
      qrKey = null;
      return;
    }
    const key = `${qr.code || qr.image}|${qr.expiresAt}`;
    // A refresh of the same QR keeps its deadline: re-deriving it from the arrival
    // time would make an expired code (or the fallback below) live longer.
    if (key === qrKey && qrDeadline !== null) return;
    qrKey = key;
    const now = Date.now();
    const expiresAt = Number(qr.expiresAt);
    if (!Number.isFinite(expiresAt)) {
      // No expiry given: trust it for the longest believable lifetime.
      qrDeadline = now + MAX_QR_LIFETIME_MS;
      return;
    }
    let remaining = expiresAt - now;
    if (remaining < 0 || remaining > MAX_QR_LIFETIME_MS) {
      // This device's clock is off: use the lifetime the relay gave the code, counted
      // from now (the snapshot just arrived, so it is about as old as the network delay).
      const updatedAt = Number(snap.updatedAt);
      remaining = Number.isFinite(updatedAt) ? expiresAt - updatedAt : 0;
      remaining = Math.min(Math.max(remaining, 0), MAX_QR_LIFETIME_MS);
    }
    qrDeadline = now + remaining;
  }

  function qrIsLive() {
    return !!(snapshot && qrDeadline !== null && qrDeadline > Date.now()
      && snapshot.state !== "open" && snapshot.state !== "close" && snapshot.state !== "refused");
  }

  // ---- view --------------------------------------------------------------------------
  // Decides what to show from (fatal error, socket, snapshot, clock). Returns a plain
  // description; render() applies it to the DOM.
  function computeView() {
    if (fatal === "unauthorized") {
      return { state: "unauthorized", status: "This link is not valid or has expired.", tone: "error" };
    }
    if (fatal === "forbidden") {
      return { state: "forbidden", status: `This link does not give access to ${instance}.`, tone: "error" };
    }
    const live = qrIsLive();
    if (!socketUp || !subscribed) {
      // Keep showing the last QR only while it can still be scanned.
      const view = everSubscribed
        ? { state: "reconnecting", status: "Connection lost — reconnecting…", tone: "warn", qr: live }
        : { state: "relay-connecting", status: "Connecting to the relay…", tone: "busy", qr: live };
      if (subscribeError) view.status = `The relay could not open ${instance}: ${subscribeError} — retrying…`;
      return view;
    }
    const snap = snapshot;
    if (!snap) return { state: "relay-connecting", status: "Connecting to the relay…", tone: "busy" };
    const open = snap.state === "open";
    if (isObject(snap.upstream) && snap.upstream.ok === false) {
      // The gateway cannot be reached: say so plainly, never spin. What we still
      // know (a live QR, the connected profile) stays visible below the banner.
      const detail = snap.upstream.detail ? String(snap.upstream.detail) : "no details";
      return {
        state: "gateway-down", status: `The WhatsApp gateway is unreachable: ${detail}`, tone: "error",
        qr: live, profile: open, newQr: !open,
      };
    }
    if (open) {
      const name = isObject(snap.profile) && snap.profile.name ? snap.profile.name
        : phoneFromWuid(isObject(snap.profile) ? snap.profile.wuid : "") || instance;
      return { state: "connected", status: `Connected as ${name}`, tone: "ok", profile: true };
    }
    if (snap.state === "close") {
      const why = isObject(snap.reason) && snap.reason.message ? `Disconnected: ${snap.reason.message}` : "Disconnected.";
      return { state: "closed", status: why, tone: "warn", newQr: true };
    }
    if (snap.state === "refused") {
      return { state: "refused", status: "QR code limit reached — press New QR to try again.", tone: "warn", newQr: true };
    }
    if (live) {
      return {
        state: "scan", status: "Open WhatsApp on your phone → Linked devices → Link a device, and scan this code.",
        tone: "info", qr: true, qrHintInStatus: true,
      };
    }
    // unknown / connecting (or a state this page does not know yet) without a live QR.
    const expired = isObject(snap.qr) && qrDeadline !== null;
    return {
      state: "waiting",
      status: expired ? "This code expired — a new one is on its way…" : "Waiting for the gateway to send a QR code…",
      // Offered here too: if nobody asked the gateway for a QR, no QR will come.
      tone: "busy", newQr: true,
    };
  }

  function render() {
    if (destroyed) return;
    const view = computeView();
    if (view.state !== lastViewState && ["scan", "connected", "closed", "refused"].includes(view.state)) {
      // The gateway answered with a definite state: an earlier action error no
      // longer describes the situation. (Not on gateway-down or waiting, where the
      // error detail is still what the user needs to read.)
      clearNotice();
    }
    lastViewState = view.state;
    // The relay usually also reports a failed "New QR" as upstream status: don't
    // say the same thing twice.
    if (noticeDetail !== null) {
      noticeEl.hidden = view.state === "gateway-down" && snapshot && isObject(snapshot.upstream)
        && String(snapshot.upstream.detail) === noticeDetail;
    }
    root.setAttribute("data-relay-state", view.state);
    if (snapshot) root.setAttribute("data-relay-seq", String(snapshot.seq));
    else root.removeAttribute("data-relay-seq");

    if (statusEl.textContent !== view.status) statusEl.textContent = view.status;
    statusEl.className = `rw-status rw-tone-${view.tone}`;

    // QR
    const qr = view.qr && snapshot && isObject(snapshot.qr) ? snapshot.qr : null;
    qrBox.hidden = !qr;
    if (qr) {
      const src = qr.image ? String(qr.image)
        : `${instancePath}/qr.svg?token=${encodeURIComponent(token)}&v=${encodeURIComponent(snapshot.seq)}`;
      // Only touch src when it changes, or the image would flicker every second.
      if (qrImg.getAttribute("src") !== src) qrImg.setAttribute("src", src);
      qrHint.hidden = !!view.qrHintInStatus;
      qrHint.textContent = "Open WhatsApp on your phone → Linked devices → Link a device, and scan this code.";
      const seconds = Math.max(0, Math.ceil((qrDeadline - Date.now()) / 1000));
      const text = `Expires in ${seconds} s`;
      if (countdownEl.textContent !== text) countdownEl.textContent = text;
      countdownEl.setAttribute("data-seconds", String(seconds));
      pairingEl.hidden = !qr.pairingCode;
      pairingCodeEl.textContent = qr.pairingCode ? formatPairingCode(qr.pairingCode) : "";
    } else if (qrImg.hasAttribute("src")) {
      // Drop the expired code from the DOM: it must not be scannable any more.
      qrImg.removeAttribute("src");
    }

    // Profile
    const profile = view.profile && snapshot && isObject(snapshot.profile) ? snapshot.profile : null;
    profileEl.hidden = !profile;
    if (profile) {
      profileNameEl.textContent = profile.name || "WhatsApp account";
      profileNumberEl.textContent = phoneFromWuid(profile.wuid);
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

    // "New QR": also kept visible while its own request is still waiting for the code.
    const inProgress = busy || !!pending;
    newQrBtn.hidden = !(view.newQr || (inProgress && !fatal && view.state !== "connected" && view.state !== "scan"));
    newQrBtn.disabled = inProgress;
    newQrBtn.classList.toggle("rw-busy", inProgress);
    newQrBtn.setAttribute("aria-busy", inProgress ? "true" : "false");
    newQrBtn.textContent = busy ? "Requesting a new QR…" : pending ? "Waiting for the new code…" : "New QR";
    if (fatal) newQrBtn.hidden = true;
    // Nothing left to scan once connected, nor when the link is unusable.
    if (demoEl) demoEl.hidden = !!fatal || view.state === "connected";

    scheduleTick();
    report(view.state);
  }

  function formatPairingCode(code) {
    const s = String(code);
    return /^[A-Za-z0-9]{8}$/.test(s) ? `${s.slice(0, 4)}-${s.slice(4)}` : s;
  }

  // Countdown: re-render right when the shown number of seconds changes, and once
  // more at expiry (which hides the QR). No timer runs when no QR is pending expiry.
  function scheduleTick() {
    clearTimeout(tickTimer);
    tickTimer = null;
    if (destroyed || qrDeadline === null) return;
    const left = qrDeadline - Date.now();
    if (left <= 0) return;
    const delay = (left % 1000) || 1000;
    tickTimer = setTimeout(render, delay + 5);
  }

  function report(state) {
    if (typeof onUpdate !== "function") return;
    const key = `${state}|${snapshot ? snapshot.seq : ""}|${snapshot ? snapshot.updatedAt : ""}`;
    if (key === lastReported) return;
    lastReported = key;
    try {
      onUpdate({ state, seq: snapshot ? snapshot.seq : null, snapshot });
    } catch (err) {
      // A host bug must not break the widget. The message only, never the payload.
      console.error("relay widget: onUpdate threw:", err && err.message);
    }
  }

  // ---- Socket.IO -------------------------------------------------------------------
  // websocket only: multi-worker relays have no sticky sessions (DESIGN.md).
  // forceNew: each widget owns its connection, so destroy() closes exactly it.
  const socket = io(base, {
    path: "/socket.io",
    transports: ["websocket"],
    auth: { token },
    forceNew: true,
  });

  function subscribe() {
    if (destroyed || fatal || !socket.connected) return;
    socket.timeout(SUBSCRIBE_TIMEOUT_MS).emit("subscribe", { instance }, (err, ack) => {
      if (destroyed || fatal) return;
      if (err || !isObject(ack)) {
        // No answer (or a garbled one): ask again, as long as we are connected.
        subscribeError = err ? "no answer" : "unexpected answer";
        render();
        retrySubscribe();
        return;
      }
      if (ack.ok === true) {
        subscribeError = null;
        subscribed = true;
        everSubscribed = true;
        if (!applySnapshot(ack.snapshot)) render();
        return;
      }
      const code = isObject(ack.error) ? ack.error.code : null;
      if (code === "forbidden") {
        // The token will never cover this instance: stop, don't hammer the relay.
        stop("forbidden");
        return;
      }
      if (code === "unauthorized") {
        stop("unauthorized");
        return;
      }
      subscribeError = (isObject(ack.error) && ack.error.message) || code || "unknown error";
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
    endPending();
    socket.disconnect();
    render();
  }

  socket.on("connect", () => {
    // Also after every reconnect: the relay forgets subscriptions with the
    // connection, and the ack brings the fresh snapshot (no stale QR replay).
    socketUp = true;
    subscribed = false;
    subscribeError = null;
    render();
    subscribe();
  });

  socket.on("update", (snap) => {
    // An update for our instance means the relay has us subscribed.
    if (isObject(snap) && snap.instance != null && snap.instance !== instance) return;
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
    // Transport errors are retried by the Manager; a refusal by the server
    // (socket.active false) is not, so retry it ourselves, gently.
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
      // The relay closed us on purpose (e.g. a restart); socket.io-client does not
      // reconnect by itself in that case. If the token has expired meanwhile,
      // connect_error "unauthorized" will stop us.
      retryTimer = setTimeout(() => { if (!destroyed && !fatal) socket.connect(); }, 1000 + Math.random() * 2000);
    }
    render();
  });

  // ---- "New QR" ----------------------------------------------------------------------
  function endPending() {
    if (!pending) return;
    clearTimeout(pending.timer);
    pending = null;
  }

  async function post(target, options) {
    const aborter = new AbortController();
    aborters.add(aborter);
    const timer = setTimeout(() => aborter.abort(), CONNECT_TIMEOUT_MS);
    try {
      return await fetch(target, { ...options, signal: aborter.signal });
    } finally {
      clearTimeout(timer);
      aborters.delete(aborter);
    }
  }

  async function errorText(response) {
    // The relay answers {"error": code, "detail": text}; show the detail, which says
    // what the gateway said. Fall back to something a person can read.
    let body = null;
    try { body = await response.json(); } catch { /* not JSON */ }
    if (isObject(body) && body.detail) return String(body.detail);
    if (isObject(body) && body.error) return String(body.error);
    if (response.status === 401) return "This link is not valid or has expired.";
    if (response.status === 403) return `This link does not give access to ${instance}.`;
    return `The relay answered ${response.status} ${response.statusText}`.trim();
  }

  async function requestNewQr() {
    if (busy || pending || fatal || destroyed) return;
    busy = true;
    clearNotice();
    render();
    try {
      const response = await post(`${instancePath}/connect`, {
        method: "POST",
        headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
      });
      if (destroyed) return;
      if (!response.ok) {
        const detail = await errorText(response);
        showNotice(`Could not get a new QR: ${detail}`, detail);
        render();
        return;
      }
      let snap = null;
      try { snap = await response.json(); } catch { /* 202 without a body is fine */ }
      if (destroyed) return;
      // Keep showing progress until the snapshot that answers this request arrives
      // (the QR comes as an update), but not forever.
      const afterSeq = isObject(snap) && Number.isFinite(snap.seq) ? snap.seq : (snapshot ? snapshot.seq : -Infinity);
      pending = {
        afterSeq,
        timer: setTimeout(() => {
          pending = null;
          if (!destroyed) {
            showNotice("The gateway has not sent a new code yet. Try again in a moment.");
            render();
          }
        }, CONNECT_PENDING_MS),
      };
      busy = false;
      if (isObject(snap)) applySnapshot(snap);
      // The update carrying the QR may have overtaken this response.
      if (pending && snapshot && (snapshot.seq > afterSeq || snapshot.state === "open" || qrIsLive())) endPending();
    } catch (err) {
      if (destroyed) return;
      showNotice(err && err.name === "AbortError"
        ? "Could not get a new QR: the relay did not answer in time."
        : "Could not get a new QR: the relay cannot be reached.");
    } finally {
      busy = false;
      render();
    }
  }
  newQrBtn.addEventListener("click", requestNewQr);

  // ---- demo (dev only) ---------------------------------------------------------------
  if (demoBtn) {
    demoBtn.addEventListener("click", async () => {
      demoBtn.disabled = true;
      demoBtn.classList.add("rw-busy");
      clearNotice();
      try {
        const response = await post(`${String(demoUrl).replace(/\/+$/, "")}/scan?instance=${encodeURIComponent(instance)}`, { method: "POST" });
        if (!response.ok && !destroyed) showNotice(`Demo scan failed: ${await errorText(response)}`);
      } catch {
        if (!destroyed) showNotice("Demo scan failed: the demo gateway cannot be reached.");
      } finally {
        demoBtn.classList.remove("rw-busy");
        demoBtn.disabled = false;
      }
    });
  }

  render();

  return {
    destroy() {
      if (destroyed) return;
      destroyed = true;
      clearTimeout(tickTimer);
      clearTimeout(retryTimer);
      endPending();
      for (const aborter of aborters) aborter.abort();
      socket.off();
      socket.disconnect();
      root.remove();
    },
  };
}
