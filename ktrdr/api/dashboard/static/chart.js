// Line charts of an operation's series, drawn as SVG by hand (no charting library).
//
// One chart per measure: "loss" with "validation_loss", "accuracy" with
// "validation_accuracy", "equity" alone (the same grouping as `ktrdr ops show --plot`).
// Every label is set as text, never as markup.

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#1f77b4", "#e8710a", "#2a9d5c", "#a347ba", "#c9302c", "#6c757d"];
const VARIANT_PREFIXES = ["validation_"];
const FIRST = ["loss", "accuracy", "equity"];
const WIDTH = 720;
const HEIGHT = 260;
const MARGIN = { left: 72, right: 16, top: 14, bottom: 42 };
const TICKS = 5;

/** Chart title -> the series drawn on it: loss, accuracy and equity first, then the rest. */
export function chartGroups(names) {
  const groups = new Map(FIRST.map((title) => [title, []]));
  for (const name of [...names].sort()) {
    let base = name;
    for (const prefix of VARIANT_PREFIXES) {
      if (base.startsWith(prefix)) base = base.slice(prefix.length);
    }
    if (!groups.has(base)) groups.set(base, []);
    groups.get(base).push(name);
  }
  for (const title of FIRST) if (groups.get(title).length === 0) groups.delete(title);
  return groups;
}

function svg(tag, attributes = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  return node;
}

function number(value) {
  const size = Math.abs(value);
  if (size !== 0 && (size >= 1e6 || size < 1e-3)) return value.toExponential(2);
  return new Intl.NumberFormat(undefined, { maximumSignificantDigits: 5 }).format(value);
}

/** A round step (1, 2, 2.5 or 5 times a power of ten) giving about ``count`` intervals. */
function niceStep(range, count) {
  const raw = range / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / magnitude;
  const nice = norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10;
  return nice * magnitude;
}

/** Tick values: multiples of ``step`` within [low, high]. */
function ticks(low, high, step) {
  const values = [];
  for (let v = Math.ceil(low / step - 1e-9) * step; v <= high + step * 1e-9; v += step) {
    values.push(Number(v.toPrecision(12)));
  }
  return values;
}

/** A formatter showing as many decimals as ``step`` needs. */
function tickFormat(step) {
  const text = String(Number(step.toPrecision(6)));
  const [mantissa, exponent] = text.split("e-");
  const decimals = (mantissa.split(".")[1] || "").length + (exponent ? Number(exponent) : 0);
  const format = new Intl.NumberFormat(undefined, { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
  return (value) => (Math.abs(value) >= 1e9 ? value.toExponential(2) : format.format(value));
}

function points(raw) {
  if (!Array.isArray(raw)) return [];
  return raw.filter(
    (p) => Array.isArray(p) && p.length === 2 && Number.isFinite(p[0]) && Number.isFinite(p[1]),
  );
}

function extent(values) {
  let low = Math.min(...values);
  let high = Math.max(...values);
  if (low === high) {
    const pad = Math.abs(low) * 0.05 || 1;
    low -= pad;
    high += pad;
  }
  return [low, high];
}

function chart(title, lines, axis) {
  const figure = document.createElement("figure");
  figure.className = "chart";
  figure.dataset.chart = title;
  const caption = document.createElement("figcaption");
  caption.textContent = title;
  figure.append(caption);

  const xs = lines.flatMap(([, pts]) => pts.map((p) => p[0]));
  const ys = lines.flatMap(([, pts]) => pts.map((p) => p[1]));
  const [x0, x1] = extent(xs);
  const [low, high] = extent(ys);
  const yStep = niceStep(high - low, TICKS - 1);
  const y0 = Math.floor(low / yStep + 1e-9) * yStep;
  const y1 = Math.ceil(high / yStep - 1e-9) * yStep;
  const xStep = Math.max(1, niceStep(x1 - x0, TICKS - 1));
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const sx = (x) => MARGIN.left + ((x - x0) / (x1 - x0)) * plotW;
  const sy = (y) => MARGIN.top + (1 - (y - y0) / (y1 - y0)) * plotH;

  const root = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    class: "chart-svg",
    role: "img",
    "aria-label": `${title} by ${axis}`,
  });
  const yFormat = tickFormat(yStep);
  for (const yValue of ticks(y0, y1, yStep)) {
    const y = sy(yValue);
    root.append(svg("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y, y2: y, class: "grid" }));
    const label = svg("text", { x: MARGIN.left - 8, y: y + 4, class: "tick", "text-anchor": "end" });
    label.textContent = yFormat(yValue);
    root.append(label);
  }
  const xFormat = tickFormat(xStep);
  for (const xValue of ticks(x0, x1, xStep)) {
    const label = svg("text", { x: sx(xValue), y: HEIGHT - MARGIN.bottom + 16, class: "tick", "text-anchor": "middle" });
    label.textContent = xFormat(xValue);
    root.append(label);
  }
  root.append(svg("rect", { x: MARGIN.left, y: MARGIN.top, width: plotW, height: plotH, class: "frame" }));
  const axisLabel = svg("text", { x: MARGIN.left + plotW / 2, y: HEIGHT - 6, class: "axis", "text-anchor": "middle" });
  axisLabel.textContent = axis;
  root.append(axisLabel);

  const legend = document.createElement("ul");
  legend.className = "legend";
  lines.forEach(([name, pts], index) => {
    const color = COLORS[index % COLORS.length];
    const path = pts.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
    root.append(svg("polyline", { points: path, stroke: color, class: "line", "data-series": name }));
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = color;
    const last = pts[pts.length - 1];
    item.append(swatch, `${name}: ${number(last[1])} at ${axis} ${last[0]}`);
    legend.append(item);
  });
  figure.append(root, legend);
  return figure;
}

/** Replace ``container``'s charts with those of ``data`` (GET .../series). */
export function renderCharts(container, data) {
  const series = (data && data.series) || {};
  const drawable = Object.keys(series)
    .map((name) => [name, points(series[name])])
    .filter(([, pts]) => pts.length > 0);
  const charts = [];
  const byName = new Map(drawable);
  for (const [title, names] of chartGroups(drawable.map(([name]) => name))) {
    charts.push(chart(title, names.map((name) => [name, byName.get(name)]), data.x || "step"));
  }
  if (charts.length === 0) {
    const empty = document.createElement("p");
    empty.className = "empty";
    empty.textContent = "No points yet: curves appear as the operation reports them.";
    charts.push(empty);
  }
  container.replaceChildren(...charts);
}
