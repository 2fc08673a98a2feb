// qr.js: draws a QR code from its text, in the browser, with uqr (from npm, vendored by the
// build: never a hand-written encoder).
//
// The drawing is an SVG: dark modules on a white ground with a quiet zone of 4 modules, in
// light and dark mode alike (phones read dark-on-light). Each module is a whole number of CSS
// pixels (fitQr) and edges are not smoothed, so the code stays crisp at any size.

import { encode } from "./vendor/uqr.mjs";

const SVG_NS = "http://www.w3.org/2000/svg";
export const QUIET_ZONE = 4;   // modules of white around the code (ISO/IEC 18004)
const DARK = "#000000";
const LIGHT = "#ffffff";

/**
 * An <svg> of `text` (throws RangeError when the text cannot fit in a QR code). Error
 * correction L: the fewest, largest modules, which is what a phone camera reads best off a
 * screen (the QR on screen is never damaged).
 */
export function qrSvg(text) {
  const { data, size } = encode(String(text), { ecc: "L", border: 0 });
  const total = size + 2 * QUIET_ZONE;
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${total} ${total}`);
  svg.setAttribute("shape-rendering", "crispEdges");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  svg.dataset.modules = String(total);

  const ground = document.createElementNS(SVG_NS, "rect");
  ground.setAttribute("width", String(total));
  ground.setAttribute("height", String(total));
  ground.setAttribute("fill", LIGHT);

  // One path: each horizontal run of dark modules is one rectangle.
  let d = "";
  for (let y = 0; y < size; y++) {
    const row = data[y];
    for (let x = 0; x < size; x++) {
      if (!row[x]) continue;
      let run = 1;
      while (x + run < size && row[x + run]) run++;
      d += `M${x + QUIET_ZONE} ${y + QUIET_ZONE}h${run}v1h-${run}z`;
      x += run - 1;
    }
  }
  const modules = document.createElementNS(SVG_NS, "path");
  modules.setAttribute("d", d);
  modules.setAttribute("fill", DARK);
  svg.append(ground, modules);
  return svg;
}

/**
 * Size `svg` to the largest whole number of CSS pixels per module that fits in `maxPx` (at
 * least 2 per module, so a narrow screen still gets a readable code).
 */
export function fitQr(svg, maxPx) {
  const total = Number(svg.dataset.modules) || 1;
  const perModule = Math.max(2, Math.floor(maxPx / total));
  const px = `${perModule * total}px`;
  if (svg.style.width !== px) {
    svg.style.width = px;
    svg.style.height = px;
  }
}

/**
 * A pairing code as WhatsApp shows it: two groups of four ("WZYE", "H1YY"); Evolution sends
 * "WZYEH1YY", WPPConnect "ABCD-EFGH". Anything else comes back as one group.
 */
export function pairingGroups(code) {
  const clean = String(code || "").replace(/[^0-9A-Za-z]/g, "").toUpperCase();
  return clean.length === 8 ? [clean.slice(0, 4), clean.slice(4)] : [clean];
}
