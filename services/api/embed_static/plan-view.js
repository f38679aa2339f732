// Drawing a venue's seat plan in SVG, shared by the seat planner and the seat plan editor.
//
// Geometry (floor-plan units, y grows downwards, angles in degrees clockwise from +x):
// - rectangle: (position_x, position_y) is the top-left corner, width x height the box,
//   rotation turns it about its centre. A row sits `row_position_y` below the top; its seats
//   share the width left of `row_offset_x`, all rows of a section at the same pitch, centred.
// - arc: (position_x, position_y) is the centre of the ring, inner/outer_radius its bounds,
//   start/end_angle its extent and rotation turns it about the centre. A row's radius is
//   inner_radius + row_position_y; `row_offset_x` is an arc length skipped at its start.
// - standing: the area is drawn with its capacity and nothing in it can be selected.

export const SVG_NS = "http://www.w3.org/2000/svg";
const DEFAULT_ROW_GAP = 24;
const MAX_SEAT_RADIUS = 11;
const MIN_VIEW_FRACTION = 1 / 16;

export function readConfig() {
  const block = document.getElementById("linjerum-embed");
  return JSON.parse(block ? block.textContent : "{}");
}

/** The organisation's colour, unless the page's nonce style already set it. */
export function applyPrimaryColor(color) {
  const root = document.documentElement;
  if (color && !getComputedStyle(root).getPropertyValue("--linjerum-primary").trim()) {
    root.style.setProperty("--linjerum-primary", color);
  }
}

/** Messages go to the embedding page only; "*" because the partner's origin is not known here. */
export function post(type, payload = {}) {
  window.parent.postMessage({ type, ...payload }, "*");
}

/** `linjerum:resize` whenever the page's content height changes, so the partner can size the iframe. */
export function watchHeight() {
  let last = -1;
  const report = () => {
    const height = Math.ceil(document.body.getBoundingClientRect().height);
    if (height !== last) {
      last = height;
      post("linjerum:resize", { height });
    }
  };
  new ResizeObserver(report).observe(document.body);
  report();
}

export async function fetchPlan(url) {
  const response = await fetch(url, { headers: { accept: "application/json" } });
  if (!response.ok) throw new Error(`The seat plan could not be loaded (${response.status}).`);
  return response.json();
}

/**
 * The page's live stream, `handlers` by event name. `plan` and `links` carry fresh plan and live
 * links (a token lives 15 minutes, a page may stay open for hours): the page reads with them, and
 * reconnects with them when the stream it opened is refused for good. `onStopped` when no link is
 * left to try.
 */
export function openLive(config, handlers, onStopped = () => {}) {
  const connect = () => {
    const url = config.live_url;
    const source = new EventSource(url);
    const renew = (e) => {
      if (e.data) Object.assign(config, JSON.parse(e.data));
    };
    source.addEventListener("plan", renew);
    source.addEventListener("links", renew);
    for (const [name, handle] of Object.entries(handlers)) source.addEventListener(name, handle);
    source.addEventListener("error", () => {
      if (source.readyState !== EventSource.CLOSED) return;
      if (config.live_url !== url) connect();
      else onStopped();
    });
  };
  if (config.live_url) connect();
}

export const seatKey = (sectionId, row, number) => `${sectionId}:${row}:${number}`;

export function el(name, attrs = {}, parent = null) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (parent) parent.appendChild(node);
  return node;
}

export function html(name, attrs = {}, text = "") {
  const node = document.createElement(name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text) node.textContent = text;
  return node;
}

const rad = (deg) => (deg * Math.PI) / 180;

function rowGap(rows, span) {
  const ys = rows.map((r) => r.row_position_y);
  if (rows.length > 1 && new Set(ys).size === 1) return span / rows.length;
  const sorted = [...ys].sort((a, b) => a - b);
  let gap = Infinity;
  for (let i = 1; i < sorted.length; i++) {
    const d = sorted[i] - sorted[i - 1];
    if (d > 0) gap = Math.min(gap, d);
  }
  return Number.isFinite(gap) ? gap : Math.min(DEFAULT_ROW_GAP, span || DEFAULT_ROW_GAP);
}

/** Row offsets from the section's top (or inner radius); evenly spread when all rows share 0. */
function rowOffsets(rows, gap) {
  const same = rows.length > 1 && new Set(rows.map((r) => r.row_position_y)).size === 1;
  return rows.map((r, i) => (same ? i * gap : r.row_position_y));
}

/** Seats in the section's own coordinates: [{row, number, x, y}], with their radius. */
export function layoutSection(section) {
  const rows = section.seating_mode === "seated" ? section.rows : [];
  if (!rows.length) return { seats: [], radius: 0, rowLabels: [] };
  const seats = [];
  const rowLabels = [];
  if (section.section_type === "arc") {
    const depth = section.outer_radius - section.inner_radius;
    const gap = rowGap(rows, depth);
    const offsets = rowOffsets(rows, gap);
    const span = rad(section.end_angle - section.start_angle);
    let radius = gap * 0.4;
    rows.forEach((row, i) => {
      const r = section.inner_radius + offsets[i] + gap / 2;
      const skip = (row.row_offset_x || 0) / r;
      const count = row.end - row.start + 1;
      const step = (span - skip) / count;
      radius = Math.min(radius, r * step * 0.42);
      const first = rad(section.start_angle) + skip;
      for (let k = 0; k < count; k++) {
        const a = first + (k + 0.5) * step;
        seats.push({ row: row.identifier, number: row.start + k, x: r * Math.cos(a), y: r * Math.sin(a) });
      }
      const a = first - Math.min(step * 0.7, 0.06);
      rowLabels.push({ row: row.identifier, x: r * Math.cos(a), y: r * Math.sin(a) });
    });
    return { seats, radius: Math.min(radius, MAX_SEAT_RADIUS), rowLabels };
  }
  const gap = rowGap(rows, section.height);
  const offsets = rowOffsets(rows, gap);
  const pitch = Math.min(
    ...rows.map((r) => (section.width - (r.row_offset_x || 0)) / (r.end - r.start + 1)),
  );
  rows.forEach((row, i) => {
    const offset = row.row_offset_x || 0;
    const count = row.end - row.start + 1;
    const left = offset + (section.width - offset - count * pitch) / 2;
    const y = offsets[i] + gap / 2;
    for (let k = 0; k < count; k++) {
      seats.push({ row: row.identifier, number: row.start + k, x: left + (k + 0.5) * pitch, y });
    }
    rowLabels.push({ row: row.identifier, x: left - pitch * 0.35, y });
  });
  return { seats, radius: Math.min(pitch * 0.4, gap * 0.4, MAX_SEAT_RADIUS), rowLabels };
}

function sectionTransform(section) {
  const { position_x: x, position_y: y, rotation } = section;
  if (section.section_type === "arc") return `translate(${x} ${y}) rotate(${rotation || 0})`;
  return `translate(${x} ${y}) rotate(${rotation || 0} ${section.width / 2} ${section.height / 2})`;
}

/** A point of the section's own coordinates on the floor plan. */
export function toPlan(section, x, y) {
  const a = rad(section.rotation || 0);
  const [cx, cy] = section.section_type === "arc" ? [0, 0] : [section.width / 2, section.height / 2];
  const dx = x - cx;
  const dy = y - cy;
  return {
    x: section.position_x + cx + dx * Math.cos(a) - dy * Math.sin(a),
    y: section.position_y + cy + dx * Math.sin(a) + dy * Math.cos(a),
  };
}

function ringPath(ri, ro, a0, a1) {
  const p = (r, a) => `${(r * Math.cos(a)).toFixed(2)} ${(r * Math.sin(a)).toFixed(2)}`;
  const large = a1 - a0 > Math.PI ? 1 : 0;
  return `M${p(ro, a0)}A${ro} ${ro} 0 ${large} 1 ${p(ro, a1)}L${p(ri, a1)}A${ri} ${ri} 0 ${large} 0 ${p(ri, a0)}Z`;
}

/** Outline points of a section on the floor plan, for fitting the view. */
function extent(section) {
  if (section.section_type === "arc") {
    const pts = [];
    for (let i = 0; i <= 8; i++) {
      const a = rad(section.start_angle + ((section.end_angle - section.start_angle) * i) / 8);
      for (const r of [section.inner_radius, section.outer_radius]) {
        pts.push(toPlan(section, r * Math.cos(a), r * Math.sin(a)));
      }
    }
    return pts;
  }
  const { width: w, height: h } = section;
  return [toPlan(section, 0, 0), toPlan(section, w, 0), toPlan(section, 0, h), toPlan(section, w, h)];
}

/**
 * A seated ring's name: just outside the ring, level on screen and anchored away from it, so
 * that however the balcony is turned its name never runs back across its seats.
 */
function ringLabel(section) {
  const mid = rad((section.start_angle + section.end_angle) / 2);
  const r = section.outer_radius * 1.03;
  const turned = mid + rad(section.rotation || 0);
  const [cos, sin] = [Math.cos(turned), Math.sin(turned)];
  return {
    x: r * Math.cos(mid),
    y: r * Math.sin(mid),
    level: -(section.rotation || 0),
    anchor: cos > 0.3 ? "start" : cos < -0.3 ? "end" : "middle",
    baseline: sin > 0.3 ? "hanging" : sin < -0.3 ? "auto" : "middle",
  };
}

/** The corners of a seated ring's name on the floor plan, at labels of `font` plan units. */
function ringLabelBox(section, font) {
  if (section.section_type !== "arc" || section.seating_mode === "standing") return [];
  const at = ringLabel(section);
  const { x, y } = toPlan(section, at.x, at.y);
  const w = 0.62 * font * section.name.length;
  const h = 1.2 * font;
  const x0 = at.anchor === "start" ? x : at.anchor === "end" ? x - w : x - w / 2;
  const y0 = at.baseline === "hanging" ? y : at.baseline === "auto" ? y - h : y - h / 2;
  return [{ x: x0, y: y0 }, { x: x0 + w, y: y0 + h }];
}

function outline(section, group) {
  const attrs = { class: "section-area", fill: section.color, stroke: section.color };
  if (section.section_type === "arc") {
    const a0 = rad(section.start_angle);
    const a1 = rad(section.end_angle);
    el("path", { ...attrs, d: ringPath(section.inner_radius, section.outer_radius, a0, a1) }, group);
    if (section.seating_mode === "standing") {
      const mid = (a0 + a1) / 2;
      const r = (section.inner_radius + section.outer_radius) / 2;
      return { x: r * Math.cos(mid), y: r * Math.sin(mid) };
    }
    return ringLabel(section);
  }
  el("rect", { ...attrs, x: 0, y: 0, width: section.width, height: section.height, rx: 6 }, group);
  return section.seating_mode === "standing"
    ? { x: section.width / 2, y: section.height / 2 }
    : { x: section.width / 2, y: 0, above: true };
}

/** Marks drawn inside every seat; CSS shows the cross for taken seats and the tick for selected. */
function markPaths(r) {
  const f = (n) => n.toFixed(2);
  const c = (r * 0.5).toFixed(2);
  const n = `-${c}`;
  return {
    cross: `M${n} ${n}L${c} ${c}M${c} ${n}L${n} ${c}`,
    tick: `M${f(-r * 0.5)} 0L${f(-r * 0.12)} ${f(r * 0.4)}L${f(r * 0.55)} ${f(-r * 0.4)}`,
  };
}

export function seatShape(parent, x, y, r, marks, fill) {
  const g = el("g", { class: "seat", transform: `translate(${x.toFixed(2)} ${y.toFixed(2)})` }, parent);
  el("circle", { r: r.toFixed(2), fill }, g);
  el("path", { class: "mark mark-taken", d: marks.cross }, g);
  el("path", { class: "mark mark-selected", d: marks.tick }, g);
  return g;
}

/** Hatching for taken seats, sized by each seat's own box so it suits any seat size. */
function defs(svg) {
  const d = el("defs", {}, svg);
  const box = "objectBoundingBox";
  const attrs = { id: "linjerum-hatch", width: 0.25, height: 0.25, patternUnits: box, patternContentUnits: box };
  const p = el("pattern", attrs, d);
  el("rect", { width: 0.25, height: 0.25, class: "hatch-bg" }, p);
  el("path", { d: "M0 0.25L0.25 0M-0.05 0.05L0.05 -0.05M0.2 0.3L0.3 0.2", class: "hatch-line" }, p);
}

/** The box showing every section with a margin (the floor plan when there is none). */
function fitting(points, venue) {
  if (!points.length) return { x: 0, y: 0, w: venue.floor_plan_width || 1200, h: venue.floor_plan_height || 800 };
  const xs = points.map((p) => p.x);
  const ys = points.map((p) => p.y);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const pad = Math.max(x1 - x0, y1 - y0) * 0.04;
  return { x: x0 - pad, y: y0 - pad, w: x1 - x0 + 2 * pad, h: y1 - y0 + 2 * pad };
}

/**
 * The SVG canvas: draws a plan in one DocumentFragment, zooms and pans through the viewBox
 * (buttons, wheel, drag, pinch). Seats and sections are found by delegation on the root.
 */
export class PlanView {
  constructor(container, { label, editor = false } = {}) {
    this.editor = editor;
    this.svg = el("svg", {
      class: editor ? "plan editing" : "plan",
      role: "group",
      "aria-label": label || "Seat plan",
      focusable: "false",
    });
    this.view = null;
    this.fit = null;
    this.sections = new Map();
    this.seats = new Map();
    this.pointers = new Map();
    this.suppressClick = false;
    this.dragSection = null;
    const frame = html("div", { class: "plan-frame" });
    frame.append(this.zoomControls(), this.svg);
    container.appendChild(frame);
    this.listen();
  }

  zoomControls() {
    const bar = html("div", { class: "zoom-controls", role: "toolbar", "aria-label": "Zoom" });
    const button = (text, label, action) => {
      const b = html("button", { type: "button", "aria-label": label, title: label }, text);
      b.addEventListener("click", action);
      bar.appendChild(b);
    };
    button("+", "Zoom in", () => this.zoomBy(1 / 1.4));
    button("−", "Zoom out", () => this.zoomBy(1.4));
    button("⤢", "Show the whole plan", () => this.reset());
    return bar;
  }

  /** Draws the plan; keeps the current zoom unless `refit`. Returns seat records by key. */
  draw(plan, { refit = false } = {}) {
    const points = plan.sections.flatMap(extent);
    if (refit || !this.fit) {
      // Labels and outlines keep about the same size on screen whatever the plan's units; the
      // rings' names, outside their seats, are fitted in too.
      const unit = (fit) => Math.max(fit.w, fit.h * 1.6) / 800;
      const seats = fitting(points, plan.venue || {});
      const names = plan.sections.flatMap((s) => ringLabelBox(s, 14 * unit(seats)));
      this.fit = fitting(points.concat(names), plan.venue || {});
      this.svg.style.aspectRatio = `${this.fit.w} / ${this.fit.h}`;
      this.svg.style.setProperty("--u", unit(this.fit).toFixed(4));
      this.setView({ ...this.fit });
    }
    const frag = document.createDocumentFragment();
    defs(frag);
    this.sections.clear();
    this.seats.clear();
    for (const section of plan.sections) frag.appendChild(this.drawSection(section));
    this.svg.replaceChildren(frag);
    return this.seats;
  }

  drawSection(section) {
    const group = el("g", {
      class: `section section-${section.seating_mode}`,
      "data-section": section.id,
      transform: sectionTransform(section),
    });
    const standing = section.seating_mode === "standing";
    const labelAt = outline(section, group);
    const title = standing ? `${section.name} · standing, ${section.capacity} places` : section.name;
    const hidden = { "aria-hidden": "true" };
    const anchor = labelAt.anchor || "middle";
    const label = el("text", { class: "section-label", x: labelAt.x, y: labelAt.y, "text-anchor": anchor, ...hidden }, group);
    if (labelAt.baseline) {
      label.setAttribute("dominant-baseline", labelAt.baseline);
      label.setAttribute("transform", `rotate(${labelAt.level} ${labelAt.x} ${labelAt.y})`);
    } else {
      label.setAttribute("dy", labelAt.above ? "-0.4em" : "-0.2em");
    }
    label.textContent = section.name;
    if (standing) {
      const places = el("tspan", { x: labelAt.x, dy: "1.3em", class: "capacity" }, label);
      places.textContent = `Standing · ${section.capacity} places`;
    }
    if (this.editor) {
      group.setAttribute("tabindex", "0");
      group.setAttribute("role", "button");
      group.setAttribute("aria-label", `Section ${section.name}: select, then move with the arrow keys`);
    } else if (standing) {
      group.setAttribute("role", "img");
      group.setAttribute("aria-label", title);
    }
    const layout = layoutSection(section);
    group.style.setProperty("--r", layout.radius.toFixed(3));
    const marks = markPaths(layout.radius);
    for (const label of layout.rowLabels) {
      const at = { x: label.x.toFixed(1), y: label.y.toFixed(1), "text-anchor": "end", "dominant-baseline": "central" };
      el("text", { class: "row-label", ...at, ...hidden }, group).textContent = label.row;
    }
    for (const seat of layout.seats) {
      const node = seatShape(group, seat.x, seat.y, layout.radius, marks, section.color);
      const key = seatKey(section.id, seat.row, seat.number);
      node.setAttribute("data-seat", key);
      const at = toPlan(section, seat.x, seat.y);
      this.seats.set(key, { el: node, section, row: seat.row, number: seat.number, x: at.x, y: at.y });
    }
    this.sections.set(section.id, { el: group, section });
    return group;
  }

  /** The seat next to `from` in a direction (dx, dy): the nearest one ahead, favouring straight lines. */
  neighbour(from, dx, dy, usable = () => true) {
    let best = null;
    let score = Infinity;
    for (const seat of this.seats.values()) {
      if (seat === from || !usable(seat)) continue;
      const ax = seat.x - from.x;
      const ay = seat.y - from.y;
      const along = ax * dx + ay * dy;
      if (along <= 0.5) continue;
      const across = Math.abs(ax * dy - ay * dx);
      const s = along + across * 3;
      if (s < score) {
        score = s;
        best = seat;
      }
    }
    return best;
  }

  setView(view) {
    this.view = view;
    this.svg.setAttribute("viewBox", `${view.x} ${view.y} ${view.w} ${view.h}`);
  }

  reset() {
    if (this.fit) this.setView({ ...this.fit });
  }

  /** Zoom about a point of the plan (default: the view's centre); factor < 1 zooms in. */
  zoomBy(factor, at) {
    const v = this.view;
    if (!v) return;
    const w = Math.min(Math.max(v.w * factor, this.fit.w * MIN_VIEW_FRACTION), this.fit.w * 2);
    const f = w / v.w;
    const p = at || { x: v.x + v.w / 2, y: v.y + v.h / 2 };
    this.setView({ x: p.x - (p.x - v.x) * f, y: p.y - (p.y - v.y) * f, w, h: v.h * f });
  }

  /** Pans, when the plan point (x, y) is out of view or at its edge, just far enough to bring it in. */
  reveal(x, y) {
    const v = this.view;
    if (!v) return;
    const margin = Math.min(v.w, v.h) * 0.1;
    const into = (at, start, size) =>
      at < start + margin ? at - margin : at > start + size - margin ? at - size + margin : start;
    const nx = into(x, v.x, v.w);
    const ny = into(y, v.y, v.h);
    if (nx !== v.x || ny !== v.y) this.setView({ ...v, x: nx, y: ny });
  }

  /** A screen point in plan units. */
  toPlanPoint(clientX, clientY) {
    const m = this.svg.getScreenCTM();
    if (!m) return { x: 0, y: 0 };
    const p = new DOMPoint(clientX, clientY).matrixTransform(m.inverse());
    return { x: p.x, y: p.y };
  }

  listen() {
    const svg = this.svg;
    svg.addEventListener(
      "wheel",
      (e) => {
        e.preventDefault();
        this.zoomBy(Math.exp(e.deltaY * 0.0015), this.toPlanPoint(e.clientX, e.clientY));
      },
      { passive: false },
    );
    // Keyboard focus stays where it can be seen however far the plan is zoomed in.
    svg.addEventListener("focusin", (e) => {
      const seat = e.target.closest("[data-seat]");
      const record = seat ? this.seats.get(seat.dataset.seat) : null;
      if (record) this.reveal(record.x, record.y);
    });
    svg.addEventListener("pointerdown", (e) => this.down(e));
    svg.addEventListener("pointermove", (e) => this.move(e));
    svg.addEventListener("pointerup", (e) => this.up(e));
    svg.addEventListener("pointercancel", (e) => this.up(e));
    // Clicks that end a drag are not taps.
    svg.addEventListener("click", (e) => {
      if (this.suppressClick) {
        e.stopImmediatePropagation();
        this.suppressClick = false;
      }
    }, true);
  }

  down(e) {
    if (e.pointerType === "mouse" && e.button !== 0) return;
    this.pointers.set(e.pointerId, { x: e.clientX, y: e.clientY, startX: e.clientX, startY: e.clientY });
    this.suppressClick = false;
    const group = this.editor ? e.target.closest("[data-section]") : null;
    if (group && this.pointers.size === 1) {
      const record = this.sections.get(Number(group.dataset.section));
      const from = this.toPlanPoint(e.clientX, e.clientY);
      const { position_x: x, position_y: y } = record.section;
      this.dragSection = { record, from, x, y, moved: false };
    } else {
      this.dragSection = null;
    }
  }

  move(e) {
    const p = this.pointers.get(e.pointerId);
    if (!p) return;
    const moved = Math.hypot(e.clientX - p.startX, e.clientY - p.startY) > 5;
    if (!moved && !p.dragging) return;
    if (!p.dragging) {
      p.dragging = true;
      this.svg.setPointerCapture(e.pointerId);
      this.svg.classList.add("dragging");
    }
    this.suppressClick = true;
    if (this.pointers.size >= 2) {
      const [a, b] = [...this.pointers.values()];
      const before = Math.hypot(a.x - b.x, a.y - b.y);
      p.x = e.clientX;
      p.y = e.clientY;
      const after = Math.hypot(a.x - b.x, a.y - b.y);
      if (before > 0 && after > 0) {
        this.zoomBy(before / after, this.toPlanPoint((a.x + b.x) / 2, (a.y + b.y) / 2));
      }
      return;
    }
    if (this.dragSection) {
      const d = this.dragSection;
      const now = this.toPlanPoint(e.clientX, e.clientY);
      d.moved = true;
      d.record.section.position_x = d.x + now.x - d.from.x;
      d.record.section.position_y = d.y + now.y - d.from.y;
      d.record.el.setAttribute("transform", sectionTransform(d.record.section));
      p.x = e.clientX;
      p.y = e.clientY;
      return;
    }
    const before = this.toPlanPoint(p.x, p.y);
    const after = this.toPlanPoint(e.clientX, e.clientY);
    p.x = e.clientX;
    p.y = e.clientY;
    const v = this.view;
    this.setView({ ...v, x: v.x - (after.x - before.x), y: v.y - (after.y - before.y) });
  }

  up(e) {
    const p = this.pointers.get(e.pointerId);
    this.pointers.delete(e.pointerId);
    if (p && p.dragging && this.svg.hasPointerCapture(e.pointerId)) this.svg.releasePointerCapture(e.pointerId);
    if (!this.pointers.size) this.svg.classList.remove("dragging");
    const d = this.dragSection;
    if (d && d.moved && !this.pointers.size) {
      this.dragSection = null;
      const detail = { section: d.record.section, from: { x: d.x, y: d.y } };
      this.svg.dispatchEvent(new CustomEvent("section-moved", { detail }));
    }
  }

  /** Moves a section by (dx, dy) plan units, as the editor's arrow keys do. */
  nudge(sectionId, dx, dy) {
    const record = this.sections.get(sectionId);
    record.section.position_x += dx;
    record.section.position_y += dy;
    record.el.setAttribute("transform", sectionTransform(record.section));
  }
}

/** A legend: the three seat states with their marks, so none relies on colour alone. */
export function legend(states) {
  const list = html("ul", { class: "legend", "aria-label": "Legend" });
  for (const [cls, text] of states) {
    const item = html("li");
    const svg = el("svg", { viewBox: "-12 -12 24 24", width: 22, height: 22, "aria-hidden": "true", class: "legend-seat" });
    svg.style.setProperty("--r", "10");
    const seat = seatShape(svg, 0, 0, 10, markPaths(10), "#9ca3af");
    if (cls) seat.classList.add(cls);
    item.append(svg, html("span", {}, text));
    list.appendChild(item);
  }
  return list;
}
