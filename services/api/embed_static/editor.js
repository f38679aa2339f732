// The embeddable seat plan editor: a preview where partners move sections, add and remove rows
// and rename rows and seats. Everything stays in this page; nothing is ever written back.
import { PlanView, applyPrimaryColor, fetchPlan, html, openLive, post, readConfig, seatKey, watchHeight } from "./plan-view.js";

const config = readConfig();
const app = document.getElementById("app");
const NUDGE = 10;
let plan = null;
let history = []; // snapshots taken before each change: {sections, labels}
let labels = new Map(); // seat key -> a renamed seat's label
let chosenSection = null;
let chosenSeat = null;
let dirty = false;

applyPrimaryColor(config.primary_color);

const heading = html("h1", { class: "embed-title" }, `${config.venue?.name || "Venue"}: seat plan editor`);
const view = new PlanView(app, { label: `Seat plan of ${config.venue?.name || "the venue"}`, editor: true });
const panel = html("div", { class: "plan-side editor-panel" });
app.prepend(heading);
app.append(panel);

const hint = html(
  "p",
  { class: "hint" },
  "A preview: drag sections to move them, pick a section or a seat to edit it. By keyboard: Tab to a section, Enter to pick it, arrows to move it, Enter again for its seats (arrows, Enter to rename one, Escape back). Nothing is saved.",
);
const chosenText = html("p", { class: "chosen-text", "aria-live": "polite" }, "No section selected.");
const button = (action, text) => html("button", { type: "button", "data-action": action }, text);
const addRow = button("add-row", "Add row");
const removeRow = button("remove-row", "Remove row");
const undo = button("undo", "Undo");
const toolbar = html("div", { class: "toolbar", role: "toolbar", "aria-label": "Edit section" });
toolbar.append(addRow, removeRow, undo);

const form = html("form", { class: "rename-form", "aria-label": "Rename row or seat", novalidate: "" });
const rowInput = html("input", { id: "rename-row", name: "row", maxlength: "10", autocomplete: "off" });
const seatInput = html("input", { id: "rename-seat", name: "seat", maxlength: "10", autocomplete: "off" });
const renameButton = html("button", { type: "submit", "data-action": "rename", class: "primary" }, "Rename");
form.append(
  html("label", { for: "rename-row" }, "Row"),
  rowInput,
  html("label", { for: "rename-seat" }, "Seat"),
  seatInput,
  renameButton,
);
const status = html("p", { class: "status", role: "status", "aria-live": "polite" });
panel.append(hint, chosenText, toolbar, html("h2", {}, "Rename"), form, status);

const clone = (value) => JSON.parse(JSON.stringify(value));
const sectionById = (id) => plan.sections.find((s) => s.id === id);

function snapshot() {
  return { sections: clone(plan.sections), labels: new Map(labels) };
}

/** Records the state before a change; the first change tells the partner's page. */
function remember(before = snapshot()) {
  history.push(before);
  if (!dirty) {
    dirty = true;
    post("linjerum:editor-dirty", { unsaved_changes: true });
  }
}

function redraw() {
  view.draw(plan);
  for (const [key, seat] of view.seats) {
    const name = labels.get(key) ?? seat.number;
    seat.el.setAttribute("aria-label", `Section ${seat.section.name}, row ${seat.row}, seat ${name}`);
    seat.el.setAttribute("role", "button");
    seat.el.setAttribute("tabindex", "-1");
  }
  if (chosenSection !== null && !sectionById(chosenSection)) chosenSection = null;
  if (chosenSeat && !view.seats.has(chosenSeat)) chosenSeat = null;
  refresh();
}

/** Buttons, the form and highlights follow what is chosen. */
function refresh() {
  for (const { el } of view.sections.values()) el.classList.toggle("chosen", Number(el.dataset.section) === chosenSection);
  for (const node of view.svg.querySelectorAll(".seat.renaming")) node.classList.remove("renaming");
  const section = chosenSection !== null ? sectionById(chosenSection) : null;
  const seated = section && section.seating_mode === "seated";
  addRow.disabled = !seated;
  removeRow.disabled = !seated || section.rows.length < 2;
  undo.disabled = history.length === 0;
  const seat = chosenSeat && view.seats.get(chosenSeat);
  rowInput.disabled = seatInput.disabled = renameButton.disabled = !seat;
  if (seat) {
    seat.el.classList.add("renaming");
    rowInput.value = seat.row;
    seatInput.value = labels.get(chosenSeat) ?? String(seat.number);
  } else {
    rowInput.value = seatInput.value = "";
  }
  const size = seated ? `${section.rows.length} rows` : `standing, ${section?.capacity} places`;
  chosenText.textContent = !section
    ? "No section selected."
    : seat
      ? `Section ${section.name}, row ${seat.row}, seat ${labels.get(chosenSeat) ?? seat.number}.`
      : `Section ${section.name} (${size}).`;
}

function choose(sectionId, key = null) {
  chosenSection = sectionId;
  chosenSeat = key;
  status.textContent = "";
  refresh();
}

function nextIdentifier(rows) {
  const last = rows[rows.length - 1].identifier;
  const taken = new Set(rows.map((r) => r.identifier));
  let candidate = `${last}2`;
  if (/^\d+$/.test(last)) candidate = String(Number(last) + 1);
  else if (last.length === 1) candidate = String.fromCharCode(last.charCodeAt(0) + 1);
  for (let n = 2; taken.has(candidate); n++) candidate = `${last}${n}`;
  return candidate;
}

function addRowTo(section) {
  const rows = section.rows;
  const last = rows[rows.length - 1];
  const gap = rows.length > 1 ? Math.abs(last.row_position_y - rows[rows.length - 2].row_position_y) || 24 : 24;
  const row = { ...last, identifier: nextIdentifier(rows), row_position_y: last.row_position_y + gap };
  rows.push(row);
  if (section.section_type === "arc") {
    section.outer_radius = Math.max(section.outer_radius, section.inner_radius + row.row_position_y + gap);
  } else {
    section.height = Math.max(section.height, row.row_position_y + gap);
  }
  section.capacity += row.end - row.start + 1;
  return row.identifier;
}

addRow.addEventListener("click", () => {
  const section = sectionById(chosenSection);
  remember();
  const id = addRowTo(section);
  redraw();
  status.textContent = `Row ${id} added to ${section.name}.`;
});

removeRow.addEventListener("click", () => {
  const section = sectionById(chosenSection);
  remember();
  const row = section.rows.pop();
  section.capacity -= row.end - row.start + 1;
  redraw();
  status.textContent = `Row ${row.identifier} removed from ${section.name}.`;
});

undo.addEventListener("click", () => {
  const before = history.pop();
  if (!before) return;
  plan.sections = before.sections;
  labels = before.labels;
  redraw();
  status.textContent = "Undone.";
});

form.addEventListener("submit", (e) => {
  e.preventDefault();
  const seat = chosenSeat && view.seats.get(chosenSeat);
  if (!seat) return;
  const section = sectionById(seat.section.id);
  const rowName = rowInput.value.trim();
  const seatName = seatInput.value.trim();
  if (!rowName || !seatName) {
    status.textContent = "A row and a seat need a name.";
    return;
  }
  if (rowName !== seat.row && section.rows.some((r) => r.identifier === rowName)) {
    status.textContent = `${section.name} already has a row ${rowName}.`;
    return;
  }
  const current = labels.get(chosenSeat) ?? String(seat.number);
  if (rowName === seat.row && seatName === current) return;
  const twin = [...view.seats].find(
    ([key, other]) =>
      key !== chosenSeat &&
      other.section.id === section.id &&
      other.row === seat.row &&
      (labels.get(key) ?? String(other.number)) === seatName,
  );
  if (twin) {
    status.textContent = `Row ${rowName} already has a seat ${seatName}.`;
    return;
  }
  remember();
  const renamed = new Map();
  for (const [key, label] of labels) {
    const [sid, row, number] = key.split(":");
    renamed.set(Number(sid) === section.id && row === seat.row ? seatKey(sid, rowName, number) : key, label);
  }
  labels = renamed;
  section.rows.find((r) => r.identifier === seat.row).identifier = rowName;
  const key = seatKey(section.id, rowName, seat.number);
  if (seatName === String(seat.number)) labels.delete(key);
  else labels.set(key, seatName);
  chosenSeat = key;
  redraw();
  status.textContent = "Renamed.";
});

view.svg.addEventListener("click", (e) => {
  const seat = e.target.closest("[data-seat]");
  const group = e.target.closest("[data-section]");
  if (seat) choose(Number(group.dataset.section), seat.dataset.seat);
  else if (group) choose(Number(group.dataset.section));
  else choose(null);
});

view.svg.addEventListener("section-moved", (e) => {
  const { section, from } = e.detail;
  const before = snapshot();
  const moved = before.sections.find((s) => s.id === section.id);
  moved.position_x = from.x;
  moved.position_y = from.y;
  remember(before);
  choose(section.id);
});

const ARROWS = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };

/** By keyboard, a chosen section's seats: arrows move between them, Enter or Space picks one to rename, Escape goes back to the section. */
function seatKeys(e, group, node) {
  const id = Number(group.dataset.section);
  const here = view.seats.get(node.dataset.seat);
  if (e.key === " " || e.key === "Enter") {
    e.preventDefault();
    choose(id, node.dataset.seat);
    return;
  }
  if (e.key === "Escape") {
    e.preventDefault();
    group.focus();
    return;
  }
  const dir = ARROWS[e.key];
  if (!dir || !here) return;
  e.preventDefault();
  const next = view.neighbour(here, dir[0], dir[1], (seat) => seat.section.id === id);
  if (next) next.el.focus();
}

view.svg.addEventListener("keydown", (e) => {
  const group = e.target.closest("[data-section]");
  if (!group) return;
  const node = e.target.closest("[data-seat]");
  if (node) return seatKeys(e, group, node);
  if (e.target !== group) return;
  const id = Number(group.dataset.section);
  if (e.key === " " || e.key === "Enter") {
    e.preventDefault();
    const first = group.querySelector("[data-seat]");
    // A second Enter on the chosen section goes into its seats.
    if (chosenSection === id && first) first.focus();
    else choose(id);
    return;
  }
  const dir = ARROWS[e.key];
  if (!dir) return;
  e.preventDefault();
  const step = e.shiftKey ? NUDGE * 5 : NUDGE;
  remember();
  view.nudge(id, dir[0] * step, dir[1] * step);
  choose(id);
});

async function load(refit) {
  plan = clone(await fetchPlan(config.plan_url));
  history = [];
  labels = new Map();
  dirty = false;
  view.draw(plan, { refit });
  redraw();
}

async function loadSaved(done) {
  try {
    await load(false);
    status.textContent = done;
  } catch (err) {
    status.textContent = err.message;
  }
}

function listenLive() {
  openLive(
    config,
    {
      plan: () => {
        if (!dirty) return loadSaved("The saved plan changed and was loaded.");
        const reload = html("button", { type: "button", "data-action": "reload" }, "Load the saved plan");
        reload.addEventListener("click", () => loadSaved("The saved plan was loaded."));
        status.replaceChildren("The saved plan changed. Loading it discards your preview edits. ", reload);
      },
    },
    () => {
      status.textContent = "Live updates stopped; reload the page to see the saved plan.";
    },
  );
}

async function start() {
  try {
    await load(true);
  } catch (err) {
    app.replaceChildren(html("p", { class: "error", role: "alert" }, err.message));
    watchHeight();
    return;
  }
  app.setAttribute("data-ready", "true");
  watchHeight();
  post("linjerum:ready", { venue: { ...config.venue, ...plan.venue }, unsaved_changes: false });
  listenLive();
}

start();
