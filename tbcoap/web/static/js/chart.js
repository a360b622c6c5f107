// The chart: chosen time-series keys over a chosen range, from the aggregation API (AVG, MIN,
// MAX, ... per bucket, at most ~500 buckets) or raw points, drawn with the vendored uPlot and
// redrawn as points are stored (told by the page's live subscription, at most once a second), or
// every 10 s while the live socket is down. The keys offered are those of the latest-telemetry page
// shown (and the ticked ones), never every key of a device that has thousands. Until the user
// chooses, the first key with a numeric latest value is ticked and the range is the shortest one
// holding the ticked keys' first point.

import { api, devicePath } from "./api.js";
import { clear, field, h, newestWins, notice, showError } from "./dom.js";
import { throttle } from "./live.js";

const MINUTE = 60000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const RANGES = [[5 * MINUTE, "Last 5 minutes"], [15 * MINUTE, "Last 15 minutes"], [HOUR, "Last hour"], [DAY, "Last day"],
  [7 * DAY, "Last week"], [30 * DAY, "Last 30 days"], ["custom", "Custom"]];
const FIXED = RANGES.map(([ms]) => ms).filter((ms) => ms !== "custom");
const FIRST_RANGE = 15 * MINUTE; // shown before any point is known
const AGGS = [["AVG", "Average"], ["MIN", "Minimum"], ["MAX", "Maximum"], ["SUM", "Sum"], ["COUNT", "Count"], ["NONE", "None (raw points)"]];
// bucket lengths to choose from: the shortest giving at most MAX_BUCKETS buckets
const INTERVALS = [1, 2, 5, 10, 15, 30].map((s) => s * 1000)
  .concat([1, 2, 5, 10, 15, 30].map((m) => m * MINUTE), [1, 2, 3, 6, 12].map((n) => n * HOUR), [DAY, 2 * DAY, 7 * DAY]);
const MAX_BUCKETS = 500;
const RAW_LIMIT = 2000;
const COLORS = ["#1f5fa8", "#c0392b", "#2e7d32", "#7b3fa0", "#b35900", "#00838f", "#6d4c41", "#ad1457"];
const REFRESH_MS = 10000;
const NUMBER = /^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$/; // a LONG or DOUBLE in the values' string form

export function intervalFor(range) {
  return INTERVALS.find((ms) => range / ms <= MAX_BUCKETS) || Math.ceil(range / MAX_BUCKETS);
}

function describeMs(ms) {
  if (ms % DAY === 0) return `${ms / DAY} d`;
  if (ms % HOUR === 0) return `${ms / HOUR} h`;
  if (ms % MINUTE === 0) return `${ms / MINUTE} min`;
  return `${ms / 1000} s`;
}

/** datetime-local text of a time in ms (local time, to the minute). */
function localInput(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * MINUTE);
  return d.toISOString().slice(0, 16);
}

export function chartSection(id, life) {
  const keysBox = h("fieldset", { id: "chart-keys", class: "choices" }, h("legend", null, "Keys"));
  const noKeys = h("span", { class: "hint" }, "No time series yet.");
  keysBox.append(noKeys);
  const range = field("chart-range", "Range", {}, "select");
  range.input.append(...RANGES.map(([value, text]) => h("option", { value, selected: value === FIRST_RANGE }, text)));
  const from = field("chart-from", "From", { type: "datetime-local" });
  const to = field("chart-to", "To", { type: "datetime-local" });
  const agg = field("chart-agg", "Aggregation", {}, "select");
  agg.input.append(...AGGS.map(([value, text]) => h("option", { value }, text)));
  const draw = h("button", { type: "submit", id: "chart-draw" }, "Draw");
  const message = notice("chart-notice");
  const summary = h("div", { id: "chart-summary", class: "chart-summary", dataset: { points: "0" } });
  const plotBox = h("div", { id: "chart", class: "chart" });
  const form = h("form", { "aria-label": "Chart settings" }, keysBox,
    h("div", { class: "row" }, range.el, from.el, to.el, agg.el, draw), message.el);

  const known = new Set();
  let boxes = 0; // checkboxes made so far (their ids)
  let plot = null;
  let plotKeys = "";
  let window_ = [0, 0]; // the x range drawn, in seconds
  // the chart chooses the keys until the user ticks or unticks one, and the range until the user picks one
  let autoKeys = true;
  let autoRange = true;

  const chosen = () => [...keysBox.querySelectorAll("input:checked")].map((box) => box.value);
  const syncCustom = () => {
    const custom = range.input.value === "custom";
    from.el.hidden = !custom;
    to.el.hidden = !custom;
    if (custom && !from.input.value) {
      const now = Date.now();
      from.input.value = localInput(now - HOUR);
      to.input.value = localInput(now);
    }
  };
  syncCustom();

  /** The keys offered: those of the latest-telemetry page shown, and the ticked ones of other pages. */
  function offerKeys(points) {
    const onPage = new Set(points.map((point) => point.key));
    for (const box of [...keysBox.querySelectorAll("input")]) {
      if (!box.checked && !onPage.has(box.value)) {
        known.delete(box.value);
        box.closest("label").remove();
      }
    }
    for (const { key } of points) {
      if (known.has(key)) continue;
      known.add(key);
      const boxId = `chart-key-${++boxes}`;
      keysBox.append(h("label", { for: boxId, class: "choice" },
        h("input", { type: "checkbox", id: boxId, value: key, onchange: () => { autoKeys = false; update(); } }), ` ${key}`));
    }
    if (known.size) noKeys.remove();
    else keysBox.append(noKeys);
  }

  /** Tick the first key of the page, in its order, whose latest value is a number. */
  function pickKey(points) {
    const point = points.find((p) => typeof p.value === "string" && NUMBER.test(p.value));
    const box = point && [...keysBox.querySelectorAll("input")].find((input) => input.value === point.key);
    if (box) box.checked = true;
    return Boolean(box);
  }

  /** The shortest fixed range holding the first point of `keys` (of the last 30 days), selected. */
  async function fitRange(keys) {
    const end = Date.now();
    const longest = FIXED[FIXED.length - 1];
    const first = await api("GET", devicePath(id, "/values/timeseries"),
      { query: { keys: keys.join(","), startTs: end - longest, endTs: end, limit: 1, orderBy: "ASC" } });
    if (!life.alive || !autoRange) return;
    const oldest = Math.min(end, ...Object.values(first).map((points) => (points[0] ? points[0].ts : end)));
    range.input.value = String(FIXED.find((ms) => end - oldest < ms) || longest);
  }

  /** [startTs, endTs] in ms, or null (a bad custom range, told beside the settings). */
  function span() {
    if (range.input.value !== "custom") {
      const end = Date.now();
      return [end - Number(range.input.value), end];
    }
    const start = new Date(from.input.value).getTime();
    const end = new Date(to.input.value).getTime();
    if (!(start < end)) {
      message.error("The range", "choose a From time before the To time");
      return null;
    }
    message.clear();
    return [start, end];
  }

  const order = newestWins();
  async function update() {
    const ticket = order.start();
    const keys = chosen();
    if (!keys.length) {
      order.fresh(ticket);
      setSummary(0, [h("p", null, "Choose one or more keys to draw them.")]);
      destroy();
      return;
    }
    try {
      if (autoRange) await fitRange(keys);
    } catch (error) {
      if (life.alive) showError("Reading the chart's data", error);
      return;
    }
    const times = span();
    if (!times) return;
    const [startTs, endTs] = times;
    const how = agg.input.value;
    const query = { keys: keys.join(","), startTs, endTs, agg: how, useStrictDataTypes: true };
    let interval = null;
    if (how === "NONE") Object.assign(query, { limit: RAW_LIMIT, orderBy: "DESC" });
    else {
      interval = intervalFor(endTs - startTs);
      Object.assign(query, { interval, limit: Math.ceil((endTs - startTs) / interval), orderBy: "ASC" });
    }
    let answer;
    try {
      answer = await api("GET", devicePath(id, "/values/timeseries"), { query });
    } catch (error) {
      if (life.alive) showError("Reading the chart's data", error);
      return;
    }
    if (!life.alive || !order.fresh(ticket)) return;
    const series = keys.map((key) => {
      const points = (answer[key] || []).map((p) => [p.ts, toNumber(p.value)]).filter(([, v]) => v !== null);
      return { key, points: how === "NONE" ? points.reverse() : points };
    });
    window_ = [startTs / 1000, endTs / 1000];
    render(series);
    const total = series.reduce((n, s) => n + s.points.length, 0);
    const what = how === "NONE" ? "raw points" : `${how.toLowerCase()} per ${describeMs(interval)} bucket`;
    const label = range.input.value === "custom" ? "custom range"
      : range.input.selectedOptions[0].text.toLowerCase() + (autoRange ? " (chosen to fit the data)" : "");
    setSummary(total, [
      h("p", null, `${total} point${total === 1 ? "" : "s"} (${what}), ${label}: ` +
        `${new Date(startTs).toLocaleString()} to ${new Date(endTs).toLocaleString()}.`),
      h("ul", { class: "stats" }, series.map(({ key, points }) => {
        const values = points.map(([, v]) => v);
        return h("li", { dataset: { key, points: values.length } }, values.length
          ? `${key}: ${values.length} point${values.length === 1 ? "" : "s"}, min ${round(Math.min(...values))}, ` +
            `max ${round(Math.max(...values))}, last ${round(values[values.length - 1])}`
          : `${key}: no numeric data in this range`);
      })),
    ]);
  }

  function setSummary(points, content) {
    summary.dataset.points = String(points);
    clear(summary).append(...content);
  }

  function render(series) {
    // one x axis: every timestamp of every key; a key without a point there gets null
    const xs = [...new Set(series.flatMap((s) => s.points.map(([ts]) => ts)))].sort((a, b) => a - b);
    const data = [xs.map((ts) => ts / 1000), ...series.map((s) => {
      const byTs = new Map(s.points);
      return xs.map((ts) => (byTs.has(ts) ? byTs.get(ts) : null));
    })];
    const keys = series.map((s) => s.key).join("\n");
    if (plot && keys === plotKeys) {
      plot.setData(data);
    } else {
      destroy();
      plotKeys = keys;
      plot = new window.uPlot({
        width: Math.max(200, plotBox.clientWidth),
        height: 300,
        scales: { x: { time: true, range: () => window_ } },
        series: [{ label: "Time" }, ...series.map((s, i) => ({
          label: s.key, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: false,
          points: { show: xs.length <= 120 },
        }))],
      }, data, plotBox);
    }
    plotBox.dataset.points = String(series.reduce((n, s) => n + s.points.length, 0));
  }

  function destroy() {
    if (plot) plot.destroy();
    plot = null;
    plotKeys = "";
    clear(plotBox);
    plotBox.dataset.points = "0";
  }

  const resize = new ResizeObserver(() => {
    if (plot) plot.setSize({ width: Math.max(200, plotBox.clientWidth), height: 300 });
  });
  resize.observe(plotBox);
  life.onEnd(() => { resize.disconnect(); destroy(); });

  range.input.addEventListener("change", () => { autoRange = false; syncCustom(); update(); });
  agg.input.addEventListener("change", () => update());
  form.addEventListener("submit", (event) => { event.preventDefault(); update(); });
  update();
  life.every(REFRESH_MS, async () => { if (chosen().length) await update(); }, true);
  const redraw = throttle(1000, () => update());

  return {
    el: h("section", { class: "card", "aria-labelledby": "chart-h" },
      h("h2", { id: "chart-h" }, "Chart"), form, summary, plotBox),
    /** Points of `keys` were stored: drawn keys are drawn again. */
    stored(keys) {
      if (keys.some((key) => chosen().includes(key))) redraw();
    },
    /** The latest-telemetry page shown, [{key, ts, value}]: its keys are offered; until the user
     * chooses, the first numeric one is ticked. */
    offer(points) {
      offerKeys(points);
      if (autoKeys && !chosen().length && pickKey(points)) update();
    },
  };
}

function toNumber(value) {
  if (typeof value === "number") return value;
  if (typeof value === "boolean") return value ? 1 : 0;
  if (typeof value === "string" && value.trim() !== "" && !isNaN(Number(value))) return Number(value);
  return null;
}

const round = (v) => Math.round(v * 1000) / 1000;
