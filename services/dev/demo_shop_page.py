"""The demo partner shop's one page: the spec's "Complete example", with its own backend's
routes (relative to /demo-shop/) in place of /api/my-backend and the simulator in place of
Stripe.js."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Demo partner shop</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 960px; margin: 0 auto; padding: 1rem; }
.banner { background: #fff4d6; border: 1px solid #e0c060; padding: .5rem 1rem; border-radius: 6px; }
iframe { border: 1px solid #ddd; border-radius: 8px; width: 100%; }
button { font-size: 1rem; padding: .5rem 1rem; margin: .5rem .5rem .5rem 0; }
#error { color: #b00020; }
label { margin-right: 1rem; }
</style>
</head>
<body>
<p class="banner"><strong>Demo partner shop — not part of the API.</strong>
A partner's own page and backend, served by <code>linjerum run</code> to show the embeddable
seat planner end to end (the backend holds the demo API key; payment goes through the Stripe
simulator).</p>
<h1 id="title">Pick your seats</h1>
<iframe id="seat-planner" height="600" title="Seat planner"></iframe>
<p>Selected: <span id="selection">none</span> <span id="full"></span></p>
<p>
<label>Name <input id="buyer-name" value="Simon Hindkaer"></label>
<label>E-mail <input id="buyer-email" type="email" value="simon@example.com"></label>
</p>
<button id="continue" disabled>Continue to payment</button>
<button id="pay" hidden>Pay</button>
<p id="error" role="alert"></p>
<section id="tickets" hidden>
<h2>Your tickets</h2>
<ul id="ticket-list"></ul>
<p><a id="pdf" href="#">Download the tickets (PDF)</a></p>
</section>
<script>
const shop = "/demo-shop/api";
const iframe = document.getElementById("seat-planner");
const continueBtn = document.getElementById("continue");
const payBtn = document.getElementById("pay");
const failure = document.getElementById("error");
let currentSeats = [];
let purchase = null;

async function call(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify(body)
  };
  const res = await fetch(shop + path, init);
  const answer = await res.json();
  if (!res.ok) throw new Error(answer.detail || answer.error || res.statusText);
  return answer;
}

function show(error) { failure.textContent = String(error.message || error); }

function seatName(s) { return "row " + s.row + " seat " + s.seat_number; }

window.addEventListener("message", (ev) => {
  if (ev.source !== iframe.contentWindow || !ev.data || typeof ev.data !== "object") return;
  switch (ev.data.type) {
    case "linjerum:seats-changed":
      currentSeats = ev.data.seats;
      continueBtn.disabled = currentSeats.length === 0 || purchase !== null;
      document.getElementById("selection").textContent =
        currentSeats.length ? currentSeats.map(seatName).join(", ") : "none";
      document.getElementById("full").textContent = "";
      break;
    case "linjerum:resize":
      iframe.height = ev.data.height;
      break;
    case "linjerum:full":
      document.getElementById("full").textContent =
        "(at most " + ev.data.max_selections + " seats)";
      break;
  }
});

continueBtn.addEventListener("click", async () => {
  continueBtn.disabled = true;
  failure.textContent = "";
  try {
    const buyer = {
      name: document.getElementById("buyer-name").value,
      email: document.getElementById("buyer-email").value
    };
    purchase = await call("/purchases", {seats: currentSeats, buyer});
    // The seats are held for this buyer now: the planner shows them taken, not picked.
    iframe.contentWindow.postMessage({type: "linjerum:reset"}, "*");
    payBtn.textContent = "Pay " + (purchase.total_cents / 100).toFixed(2) + " " +
      purchase.currency + " (simulator test card)";
    payBtn.hidden = false;
  } catch (error) {
    show(error);
    continueBtn.disabled = currentSeats.length === 0;
  }
});

payBtn.addEventListener("click", async () => {
  payBtn.disabled = true;
  failure.textContent = "";
  try {
    await call("/purchases/" + purchase.token + "/pay",
               {payment_intent_id: purchase.payment_intent_id});
    for (let attempt = 0; attempt < 60; attempt++) {
      const state = await call("/purchases/" + purchase.token);
      if (state.paid) return showTickets(state);
      await new Promise((done) => setTimeout(done, 500));
    }
    throw new Error("the payment was not confirmed within 30 seconds");
  } catch (error) {
    show(error);
    payBtn.disabled = false;
  }
});

function showTickets(state) {
  payBtn.hidden = true;
  const list = document.getElementById("ticket-list");
  list.replaceChildren(...state.tickets.map((t) => {
    const item = document.createElement("li");
    item.className = "ticket";
    item.textContent = t.code + " — " + t.type + (t.seat ? ", " + seatName(t.seat) : "");
    return item;
  }));
  document.getElementById("pdf").href = state.pdf_url;
  document.getElementById("tickets").hidden = false;
}

call("/planner", {}).then((planner) => {
  document.getElementById("title").textContent = planner.event.name + " — pick your seats";
  iframe.src = planner.src + "&max=4";
}).catch(show);
</script>
</body>
</html>
"""
