// One identity's window score over the last minutes, as SVG: the threshold line and the
// alert spans shaded; the stream's other identities drawn faint for comparison. No library.
const NS = "http://www.w3.org/2000/svg";
const W = 560, H = 220, L = 34, R = 8, T = 8, B = 22;

function el(name, attrs, parent) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

export function renderChart(container, data, track) {
  // The last minute at least, up to five (or the history kept): as much as there is to see.
  const first = Math.min(...Object.values(data.identities).flatMap((s) => s.points.map(([t]) => t)), data.now);
  const end = data.now, start = end - Math.min(data.horizon_s, 300, Math.max(60, Math.ceil((end - first) / 60) * 60));
  const x = (t) => L + ((t - start) / (end - start)) * (W - L - R);
  const y = (s) => T + (1 - s) * (H - T - B);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "data-track": String(track),
                          "aria-label": `window score of identity ${track}` });
  el("line", { class: "axis", x1: L, x2: W - R, y1: y(0), y2: y(0) }, svg);
  el("line", { class: "axis", x1: L, x2: L, y1: T, y2: y(0) }, svg);
  for (const s of [0, 0.5, 1]) el("text", { x: 4, y: y(s) + 3 }, svg).textContent = s.toFixed(1);
  const step = end - start > 120 ? 60 : 15;
  for (let back = 0; back <= end - start; back += step) {
    const label = back === 0 ? "now" : step === 60 ? `-${back / 60}m` : `-${back}s`;
    el("text", { x: x(end - back), y: H - 6, "text-anchor": back === 0 ? "end" : "middle" }, svg).textContent = label;
  }
  const mine = data.identities[String(track)] || { points: [], alerts: [] };
  for (const a of mine.alerts) {
    const x0 = x(Math.max(start, a.opened)), x1 = x(Math.min(end, a.cleared ?? end));
    if (x1 > x0) el("rect", { class: "span", x: x0, y: T, width: x1 - x0, height: y(0) - T, "data-alert": a.id }, svg);
  }
  if (data.threshold != null) {
    el("line", { class: "threshold", x1: L, x2: W - R, y1: y(data.threshold), y2: y(data.threshold) }, svg);
  }
  const path = (points) => points.filter(([t]) => t >= start)
    .map(([t, s], i) => `${i ? "L" : "M"}${x(t).toFixed(1)},${y(s).toFixed(1)}`).join("");
  for (const [other, series] of Object.entries(data.identities)) {
    if (other !== String(track) && series.points.length) el("path", { class: "line", d: path(series.points) }, svg);
  }
  if (mine.points.length) el("path", { class: "line me", d: path(mine.points), "data-points": mine.points.length }, svg);
  container.replaceChildren(svg);
  return mine;
}
