// widget-style.js: the widget's styles, scoped under .rw-root so that a host page's styles and
// the widget's do not leak into each other; injected once per document or per shadow root.

const STYLE_ID = "relay-widget-style";
const STYLE = `
.rw-root {
  --rw-fg: #1b1f23; --rw-muted: #57606a; --rw-bg: #ffffff; --rw-border: #d0d7de;
  --rw-accent: #075e54; --rw-accent-fg: #ffffff; --rw-link: #075e54;
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
    --rw-accent: #25d366; --rw-accent-fg: #04210f; --rw-link: #7ee2a8;
    --rw-warn-bg: #3b2e00; --rw-warn-fg: #f8e3a1; --rw-warn-border: #9e6a03;
    --rw-err-bg: #490202; --rw-err-fg: #ffdcd7; --rw-err-border: #da3633;
    --rw-ok-bg: #033a16; --rw-ok-fg: #aff5b4; --rw-ok-border: #2ea043;
  }
}
.rw-root *, .rw-root *::before, .rw-root *::after { box-sizing: inherit; }
.rw-root [hidden] { display: none !important; }
.rw-root p, .rw-root ol { margin: 0; }
.rw-status {
  padding: .75rem 1rem; border-radius: .5rem; width: 100%;
  border: 1px solid transparent; font-weight: 600;
}
.rw-tone-info { color: var(--rw-fg); }
.rw-tone-busy::before, .rw-busy::before {
  content: ""; display: inline-block; width: .9em; height: .9em; margin-right: .5em;
  vertical-align: -.1em; border: 2px solid currentColor; border-right-color: transparent;
  border-radius: 50%; animation: rw-spin .9s linear infinite;
}
.rw-tone-warn { background: var(--rw-warn-bg); color: var(--rw-warn-fg); border-color: var(--rw-warn-border); }
.rw-tone-error { background: var(--rw-err-bg); color: var(--rw-err-fg); border-color: var(--rw-err-border); }
.rw-tone-ok { background: var(--rw-ok-bg); color: var(--rw-ok-fg); border-color: var(--rw-ok-border); }
.rw-hint { color: var(--rw-fg); }
.rw-qr-box, .rw-pairing-box { display: flex; flex-direction: column; align-items: center; gap: .75rem; width: 100%; }
.rw-qr {
  /* White ground in dark mode too. The quiet zone is part of the drawing; this frame adds a
     little more white so that its rounded corners never cut into it. */
  display: inline-flex; line-height: 0; background: #ffffff; border-radius: .5rem;
  border: 1px solid var(--rw-border); padding: 4px;
}
.rw-qr svg { display: block; }
.rw-qr img {
  /* The gateway's own picture (no code to draw from): scale without smoothing. */
  display: block; width: min(80vw, 320px); height: min(80vw, 320px); padding: 12px;
  image-rendering: pixelated; image-rendering: crisp-edges; object-fit: contain; background: #ffffff;
}
.rw-steps { text-align: left; padding-left: 1.5rem; width: 100%; max-width: 24rem; display: grid; gap: .25rem; }
.rw-countdown { font-variant-numeric: tabular-nums; color: var(--rw-muted); }
.rw-pairing-label { color: var(--rw-muted); font-weight: 600; }
.rw-code {
  display: flex; align-items: center; justify-content: center; gap: .5rem; flex-wrap: wrap;
  font: 700 clamp(1.75rem, 9vw, 2.5rem)/1.1 ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace;
  letter-spacing: .12em; user-select: all; -webkit-user-select: all;
}
.rw-code:focus-visible { outline: 3px solid var(--rw-accent); outline-offset: 4px; border-radius: .25rem; }
.rw-code-group {
  padding: .35rem .2rem .35rem .5rem; border-radius: .5rem; border: 2px solid var(--rw-border);
  background: var(--rw-bg);
}
.rw-code-sep { color: var(--rw-muted); }
.rw-profile { display: flex; align-items: center; gap: .75rem; text-align: left; }
.rw-avatar { width: 56px; height: 56px; border-radius: 50%; object-fit: cover; background: var(--rw-border); }
.rw-profile-name { font-weight: 600; }
.rw-profile-number { color: var(--rw-muted); font-variant-numeric: tabular-nums; }
.rw-actions { display: flex; flex-direction: column; align-items: center; gap: .75rem; width: 100%; }
.rw-button {
  font: inherit; font-weight: 600; min-height: 44px; padding: .5rem 1.25rem; cursor: pointer;
  border-radius: .5rem; border: 1px solid var(--rw-accent); background: var(--rw-accent); color: var(--rw-accent-fg);
  max-width: 100%;
}
.rw-button.rw-secondary { background: transparent; color: var(--rw-link); border-color: var(--rw-link); }
.rw-link {
  font: inherit; font-weight: 600; min-height: 44px; padding: .5rem .75rem; cursor: pointer;
  background: none; border: 0; color: var(--rw-link); text-decoration: underline; text-underline-offset: .2em;
}
.rw-button:disabled { opacity: .75; cursor: progress; }
.rw-button:focus-visible, .rw-link:focus-visible, .rw-input:focus-visible {
  outline: 3px solid var(--rw-accent); outline-offset: 2px;
}
.rw-phone-form { width: 100%; max-width: 24rem; }
.rw-phone {
  display: flex; flex-direction: column; align-items: stretch; gap: .5rem; min-width: 0;
  text-align: left; border: 1px solid var(--rw-border); border-radius: .5rem; padding: .75rem 1rem 1rem; margin: 0;
}
.rw-phone legend { font-weight: 700; padding: 0 .25rem; }
.rw-phone label { font-weight: 600; }
.rw-input {
  font-family: inherit; font-size: 1.25rem; line-height: 1.3; font-variant-numeric: tabular-nums;
  min-height: 48px; padding: .5rem .75rem;
  border-radius: .5rem; border: 1px solid var(--rw-muted); background: var(--rw-bg); color: var(--rw-fg); width: 100%;
}
.rw-input[aria-invalid="true"] { border: 2px solid var(--rw-err-border); }
.rw-field-hint { color: var(--rw-muted); font-size: .9rem; }
.rw-field-error { color: var(--rw-err-fg); background: var(--rw-err-bg); border-radius: .25rem; padding: .25rem .5rem; font-weight: 600; }
.rw-phone-actions { display: flex; flex-wrap: wrap; gap: .5rem; justify-content: space-between; align-items: center; }
.rw-demo {
  display: flex; flex-direction: column; align-items: center; gap: .35rem;
  padding: .5rem .75rem; border: 2px dashed var(--rw-warn-border); border-radius: .5rem;
}
.rw-demo-label { font-size: .8rem; text-transform: uppercase; letter-spacing: .06em; color: var(--rw-muted); }
.rw-demo .rw-button { background: transparent; color: var(--rw-fg); border-color: var(--rw-warn-border); }
.rw-notice { width: 100%; }
@keyframes rw-spin { to { transform: rotate(360deg); } }
@media (prefers-reduced-motion: reduce) {
  .rw-tone-busy::before, .rw-busy::before { animation: none; }
}
`;

// Once per document, or per shadow root (the widget also works inside a web component).
const styledRoots = new WeakSet();

export function injectStyle(element) {
  const root = element.getRootNode ? element.getRootNode() : document;
  const inShadow = typeof ShadowRoot !== "undefined" && root instanceof ShadowRoot;
  const key = inShadow ? root : document;
  if (styledRoots.has(key)) return;
  if (!(key === document && document.getElementById(STYLE_ID))) {
    const style = document.createElement("style");
    style.id = STYLE_ID;
    style.textContent = STYLE;
    (inShadow ? root : document.head || document.documentElement).appendChild(style);
  }
  styledRoots.add(key);
}
