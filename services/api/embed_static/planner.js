// The embeddable seat planner: pick seats on the venue's plan, tell the partner's page.
import {
  PlanView,
  applyPrimaryColor,
  fetchPlan,
  html,
  legend,
  openLive,
  post,
  readConfig,
  seatKey,
  watchHeight,
} from "./plan-view.js";

const config = readConfig();
const app = document.getElementById("app");
const max = Number.isInteger(config.max) ? config.max : null;
const selected = new Map(); // key -> {section_id, row, seat_number}, in the order picked
let taken = new Set();
let unsold = new Set(); // sections no ticket type of the event may use
let plan = null;
let focusKey = null;

applyPrimaryColor(config.primary_color);

const heading = html("h1", { class: "embed-title" }, config.event?.name || "Seat plan");
const status = html("p", { class: "status", role: "status", "aria-live": "polite" });
const view = new PlanView(app, { label: `Seat plan for ${config.event?.name || "the event"}` });
const side = html("div", { class: "plan-side" });
app.prepend(heading);
app.append(side);
side.append(
  legend([
    ["", "Free"],
    ["selected", "Selected"],
    ["taken", "Taken"],
  ]),
);
const prices = html("section", { class: "prices", "aria-label": "Prices" });
const summary = html("p", { class: "summary" });
side.append(prices, summary, status);

function currencyFormat(code) {
  try {
    return new Intl.NumberFormat(document.documentElement.lang || undefined, { style: "currency", currency: code });
  } catch {
    return { format: (n) => `${n.toFixed(2)} ${code}` };
  }
}

function drawPrices() {
  const fmt = currencyFormat(plan.currency || config.event?.currency || "DKK");
  const names = new Map(plan.sections.map((s) => [s.id, s.name]));
  const list = html("ul");
  for (const type of plan.ticket_types || []) {
    const where = type.section_ids.map((id) => names.get(id)).filter(Boolean).join(", ");
    const item = html("li");
    item.append(
      html("span", { class: "price-name" }, type.name),
      html("span", { class: "price-amount" }, fmt.format(type.price_cents / 100)),
      html("span", { class: "price-where" }, where),
    );
    list.appendChild(item);
  }
  prices.replaceChildren(html("h2", {}, "Prices"), list);
}

function state(key) {
  if (selected.has(key)) return "selected";
  return isTaken(key) ? "taken" : "free";
}

function isTaken(key) {
  const seat = view.seats.get(key);
  return taken.has(key) || (seat && unsold.has(seat.section.id));
}

function paint(key) {
  const seat = view.seats.get(key);
  if (!seat) return;
  const s = state(key);
  const node = seat.el;
  node.classList.toggle("taken", s === "taken");
  node.classList.toggle("selected", s === "selected");
  node.setAttribute("aria-checked", s === "selected" ? "true" : "false");
  if (s === "taken") node.setAttribute("aria-disabled", "true");
  else node.removeAttribute("aria-disabled");
  node.setAttribute("aria-label", `Section ${seat.section.name}, row ${seat.row}, seat ${seat.number}, ${s}`);
}

function announce() {
  post("linjerum:seats-changed", { seats: [...selected.values()] });
  summarize();
}

function summarize() {
  const n = selected.size;
  const most = max ? ` of at most ${max}` : "";
  summary.textContent = n === 0 ? "No seats selected." : `${n} seat${n === 1 ? "" : "s"} selected${most}.`;
}

function toggle(key) {
  const seat = view.seats.get(key);
  if (!seat || isTaken(key)) return;
  if (selected.has(key)) {
    selected.delete(key);
  } else {
    if (max !== null && selected.size >= max) {
      status.textContent = `You can pick at most ${max} seat${max === 1 ? "" : "s"}.`;
      post("linjerum:full", { max_selections: max });
      return;
    }
    selected.set(key, { section_id: seat.section.id, row: seat.row, seat_number: seat.number });
  }
  status.textContent = "";
  paint(key);
  announce();
}

function focusSeat(key) {
  const prev = focusKey && view.seats.get(focusKey);
  if (prev) prev.el.setAttribute("tabindex", "-1");
  focusKey = key;
  const seat = view.seats.get(key);
  seat.el.setAttribute("tabindex", "0");
  seat.el.focus();
}

/** Draws the plan, keeping the still-valid selection; true when the selection shrank. */
function render(payload, refit) {
  plan = payload;
  const forSale = new Set((plan.ticket_types || []).flatMap((t) => t.section_ids));
  unsold = new Set(plan.ticket_types?.length ? plan.sections.filter((s) => !forSale.has(s.id)).map((s) => s.id) : []);
  taken = new Set(plan.sold_seats.map((s) => seatKey(s.section_id, s.row, s.seat_number)));
  view.draw(plan, { refit });
  let dropped = false;
  for (const key of [...selected.keys()]) {
    if (!view.seats.has(key) || isTaken(key)) {
      selected.delete(key);
      dropped = true;
    }
  }
  for (const [key, seat] of view.seats) {
    seat.el.setAttribute("role", "checkbox");
    seat.el.setAttribute("tabindex", "-1");
    paint(key);
  }
  const all = [...view.seats.entries()];
  const free = all.find(([key]) => !isTaken(key));
  const first = view.seats.get(focusKey) || (free || all[0] || [])[1];
  if (first) {
    focusKey = seatKey(first.section.id, first.row, first.number);
    first.el.setAttribute("tabindex", "0");
  }
  drawPrices();
  return dropped;
}

function markTaken(soldSeats) {
  const next = new Set(soldSeats.map((s) => seatKey(s.section_id, s.row, s.seat_number)));
  const changed = [...taken].filter((k) => !next.has(k)).concat([...next].filter((k) => !taken.has(k)));
  taken = next;
  let dropped = false;
  for (const key of changed) {
    if (taken.has(key) && selected.delete(key)) dropped = true;
    paint(key);
  }
  if (dropped) {
    status.textContent = "A seat you picked was just taken by someone else.";
    announce();
  }
}

const ARROWS = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };

view.svg.addEventListener("click", (e) => {
  const node = e.target.closest("[data-seat]");
  if (!node) return;
  focusSeat(node.dataset.seat);
  toggle(node.dataset.seat);
});

view.svg.addEventListener("keydown", (e) => {
  const node = e.target.closest("[data-seat]");
  if (!node) return;
  if (e.key === " " || e.key === "Enter") {
    e.preventDefault();
    toggle(node.dataset.seat);
    return;
  }
  const dir = ARROWS[e.key];
  if (!dir) return;
  e.preventDefault();
  const next = view.neighbour(view.seats.get(node.dataset.seat), dir[0], dir[1]);
  if (next) focusSeat(seatKey(next.section.id, next.row, next.number));
});

window.addEventListener("message", (e) => {
  if (e.source !== window.parent || !e.data || e.data.type !== "linjerum:reset") return;
  const keys = [...selected.keys()];
  selected.clear();
  keys.forEach(paint);
  status.textContent = "";
  announce();
});

function listenLive() {
  openLive(
    config,
    {
      taken: (e) => markTaken(JSON.parse(e.data).sold_seats),
      plan: async () => {
        try {
          if (render(await fetchPlan(config.plan_url), false)) announce();
        } catch (err) {
          status.textContent = err.message;
        }
      },
    },
    () => {
      status.textContent = "Live updates stopped; reload the page to see the latest seats.";
    },
  );
}

async function start() {
  try {
    render(await fetchPlan(config.plan_url), true);
  } catch (err) {
    app.replaceChildren(html("p", { class: "error", role: "alert" }, err.message));
    watchHeight();
    return;
  }
  summarize();
  app.setAttribute("data-ready", "true");
  watchHeight();
  post("linjerum:ready", {
    event_id: config.event?.id ?? plan.event_id,
    event_slug: config.event?.slug ?? null,
    event_name: config.event?.name ?? null,
    max_selections: max,
    currency: plan.currency || config.event?.currency || null,
  });
  listenLive();
}

start();
