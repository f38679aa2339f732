// The "Try it live" page: frames the editor and the planner with freshly minted embeds and lists
// the messages they post. The page's server answers `embeds_url` with
// {"planner": <POST /api/v1/embed/seat-planner's "embed">, "editor": <.../seat-plan-editor's>}.
const config = JSON.parse(document.getElementById("linjerum-try")?.textContent || "{}");
const editor = document.getElementById("try-editor");
const planner = document.getElementById("try-planner");
const log = document.getElementById("try-log");
const frames = new Map([
  [editor, "editor"],
  [planner, "planner"],
]);
const LIMIT = 200;
let fresh = true;

function show(source, text) {
  if (fresh) {
    log.replaceChildren();
    fresh = false;
  }
  const item = document.createElement("li");
  const time = new Date().toLocaleTimeString();
  item.textContent = `${time}  ${source}  ${text}`;
  log.prepend(item);
  while (log.children.length > LIMIT) log.lastElementChild.remove();
}

window.addEventListener("message", (e) => {
  const frame = [...frames.keys()].find((f) => f.contentWindow === e.source);
  if (!frame || !e.data || typeof e.data !== "object") return;
  if (e.data.type === "linjerum:resize") frame.style.height = `${Math.max(320, e.data.height)}px`;
  show(frames.get(frame), JSON.stringify(e.data));
});

document.getElementById("try-reset").addEventListener("click", () => {
  planner.contentWindow.postMessage({ type: "linjerum:reset" }, "*");
  show("page", '{"type":"linjerum:reset"}');
});

async function start() {
  const response = await fetch(config.embeds_url || "/embed/try/embeds");
  if (!response.ok) throw new Error(`The demo embeds could not be minted (${response.status}).`);
  const embeds = await response.json();
  editor.src = embeds.editor.url;
  const url = new URL(embeds.planner.url, location.href);
  if (config.max) url.searchParams.set("max", String(config.max));
  planner.src = url.href;
}

start().catch((err) => show("page", err.message));
