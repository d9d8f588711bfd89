// The dashboard: one page, sections chosen by the URL's hash (#cluster, #tasks?queue=q, #task/7,
// ...). The overview (this node, queues, agents, counts) arrives by server-sent events from
// /api/events; a listing (tasks, decisions, workflows) is fetched again when the applied index
// moves. Every string from the cluster is set as text, never as HTML.
//
// With `?poll` in the URL the page fetches /api/overview every second instead: for proxies that
// buffer event streams, and for headless snapshots (Chromium's --virtual-time-budget never ends
// while a stream is open).
"use strict";

const state = { overview: null, listing: null, listingKey: "", listingApplied: -1, rates: {} };

// An element with attributes and children (strings become text nodes).
function h(tag, attrs, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) element.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

function badge(text) {
  const name = String(text).toLowerCase().replace(/\s+/g, "-");
  return h("span", { class: "badge s-" + name, "data-state": name }, text);
}

function table(headers, rows, attrs) {
  const head = h("tr", null, headers.map((title) => h("th", { class: title.startsWith("#") ? "num" : null }, title.replace(/^#/, ""))));
  const body = rows.map((cells) => h("tr", null, cells.map((cell, i) => h("td", { class: headers[i].startsWith("#") ? "num" : null }, cell))));
  return h("table", attrs, h("thead", null, head), h("tbody", null, body));
}

function card(label, value, id) {
  return h("div", { class: "card", id }, h("div", { class: "label" }, label), h("div", { class: "value" }, value));
}

function age(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return ms + " ms";
  if (ms < 120000) return (ms / 1000).toFixed(1) + " s";
  return Math.round(ms / 60000) + " min";
}

function time(unixMs) {
  return unixMs ? new Date(unixMs).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "–";
}

function route() {
  const hash = location.hash.replace(/^#/, "") || "cluster";
  const [path, query] = hash.split("?");
  const [page, arg] = path.split("/");
  return { page, arg, params: new URLSearchParams(query || "") };
}

async function getJson(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(url + ": " + response.status + " " + (await response.text()));
  return response.json();
}

// --- pages -----------------------------------------------------------------------------------

// A member's role as this node can tell: its own, the leader's, and on the leader whether each
// follower acknowledged lately; a follower knows nothing of the others' health.
function memberRole(n, m) {
  if (m.id === n.leader) return "leader";
  if (m.id === n.id) return n.role;
  if (n.role !== "leader") return "unknown";
  if (m.last_ack_ms === null || m.last_ack_ms > 3000) return "unreachable";
  return m.voter ? "follower" : "learner";
}

function clusterPage(o) {
  const n = o.node;
  const leaderMember = n.members.find((m) => m.id === n.leader);
  const rows = n.members.map((m) => [
    String(m.id) + (m.id === n.id ? " (this node)" : ""),
    m.api_addr,
    badge(memberRole(n, m)),
    m.voter ? "voter" : "learner",
    m.matched === null ? "–" : String(m.matched),
    m.matched === null ? "–" : String(Math.max(0, n.last_log_index - m.matched)),
    m.last_ack_ms === null ? "–" : age(m.last_ack_ms) + " ago",
  ]);
  return [
    h("h2", null, "This node"),
    h("div", { class: "cards" },
      card("node", String(n.id), "node-id"),
      card("role", badge(n.role), "node-role"),
      card("leader", n.leader === null ? "none" : String(n.leader), "leader-id"),
      card("term", String(n.term), "term"),
      card("committed", String(n.committed)),
      card("applied", String(n.applied)),
      card("apply lag", String(n.apply_lag)),
      card("health", badge(n.serving ? "serving" : "not serving"), "health")),
    h("h2", null, "Members"),
    h("p", { class: "muted" }, "As this node knows them. Matched index, lag and last acknowledgment come from the leader's replication progress, so they show only on the leader's dashboard; a follower cannot tell the other followers' state (unknown)."),
    table(["node", "api address", "role", "membership", "#matched", "#lag (entries)", "#last ack"], rows, { id: "members" }),
    h("p", { id: "leader-line" }, n.leader === null ? "No leader known." :
      "Leader: node " + n.leader + (leaderMember ? " at " + leaderMember.api_addr : "") + ", term " + n.term + "."),
  ];
}

function throughput(o) {
  const now = Date.now();
  for (const q of o.queues) {
    const done = (q.states.succeeded || 0) + q.dead_letters + (q.states.canceled || 0);
    const samples = (state.rates[q.queue] = state.rates[q.queue] || []);
    samples.push([now, done]);
    while (samples.length > 1 && now - samples[0][0] > 60000) samples.shift();
  }
}

function rate(queue) {
  const samples = state.rates[queue] || [];
  if (samples.length < 2) return "–";
  const [t0, d0] = samples[0];
  const [t1, d1] = samples[samples.length - 1];
  return t1 > t0 ? (Math.max(0, d1 - d0) / ((t1 - t0) / 1000)).toFixed(2) : "–";
}

function queuesPage(o) {
  const rows = o.queues.map((q) => [
    h("a", { href: "#tasks?queue=" + encodeURIComponent(q.queue) }, q.queue),
    String(q.pending), age(q.oldest_pending_age_ms), String(q.states.assigned || 0),
    String((q.states.delayed || 0) + (q.states.retry_wait || 0) + (q.states.blocked || 0)),
    String(q.states.succeeded || 0), String(q.dead_letters), rate(q.queue),
  ]);
  return [
    h("h2", null, "Queues"),
    h("div", { class: "cards" }, card("tasks", String(o.counts.tasks)), card("pending", String(o.counts.pending)),
      card("assigned", String(o.counts.assigned)), card("dead letters", String(o.counts.dead_letters))),
    o.queues.length ? table(["queue", "#backlog", "#oldest pending", "#assigned", "#waiting", "#succeeded", "#dead letters", "#finished/s"], rows, { id: "queues" })
      : h("p", { class: "muted" }, "No tasks."),
    h("p", { class: "muted" }, "finished/s: tasks that succeeded, were canceled or dead-lettered per second over the last minute this page watched (finished tasks are forgotten after their retention, which this does not count)."),
  ];
}

function agentsPage(o) {
  const rows = o.agents.map((a) => [
    a.name, badge(a.live ? "live" : "gone"), a.capabilities.join(", "),
    a.running.length + " / " + a.max_concurrent, String(a.reported_load),
    a.drained ? badge("drained") : "no", badge(a.breaker), String(a.completed), String(a.failed), time(a.last_heartbeat_ms),
  ]);
  return [
    h("h2", null, "Agents (" + o.counts.agents_live + " live)"),
    o.agents.length ? table(["agent", "session", "capabilities", "running", "#reported load", "drained", "breaker", "#completed", "#failed", "last heartbeat"], rows, { id: "agents" })
      : h("p", { class: "muted" }, "No agents registered."),
  ];
}

function tasksForm(params) {
  const states = ["", "pending", "delayed", "blocked", "assigned", "retry_wait", "succeeded", "dead_lettered", "canceled", "expired"];
  const select = h("select", { name: "state" }, states.map((s) => {
    const option = h("option", { value: s }, s || "any");
    if (s === (params.get("state") || "")) option.selected = true;
    return option;
  }));
  const form = h("form", { class: "filter" },
    h("label", null, "queue", h("input", { name: "queue", value: params.get("queue") || "" })),
    h("label", null, "state", select),
    h("label", null, "id", h("input", { name: "id", size: 8, value: params.get("id") || "" })),
    h("button", { type: "submit" }, "Search"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    for (const [name, value] of new FormData(form)) if (value) query.set(name, value);
    location.hash = "tasks?" + query;
  });
  return form;
}

function tasksPage(o, r) {
  const listing = state.listing;
  const rows = listing ? listing.tasks.map((t) => [
    h("a", { href: "#task/" + t.id }, String(t.id)), t.queue, badge(t.state),
    t.attempts + " / " + t.max_attempts, t.agent || "–", time(t.submitted_ms), t.last_error,
  ]) : [];
  const next = new URLSearchParams(r.params);
  if (listing) next.set("after_id", listing.next_after_id);
  return [
    h("h2", null, "Tasks"), tasksForm(r.params),
    listing ? table(["id", "queue", "state", "attempts", "agent", "submitted", "last error"], rows, { id: "tasks" }) : h("p", { class: "muted" }, "Loading…"),
    listing && listing.more ? h("a", { href: "#tasks?" + next }, "Next page") : null,
  ];
}

function taskPage(o, r) {
  const t = state.listing;
  if (!t) return [h("p", { class: "muted" }, "Loading…")];
  if (t.error) return [h("p", null, t.error)];
  const rows = t.history.map((a) => [String(a.attempt), a.agent, String(a.fencing_token), time(a.assigned_ms), time(a.ended_ms), badge(a.outcome), a.error]);
  return [
    h("h2", null, "Task " + t.id), h("p", null, h("a", { href: "#tasks?queue=" + encodeURIComponent(t.queue) }, "← tasks of " + t.queue)),
    h("div", { class: "cards", id: "task" }, card("state", badge(t.state)), card("queue", t.queue), card("attempts", t.attempts + " / " + t.max_attempts),
      card("agent", t.agent || "–"), card("payload", t.payload_bytes + " B"), card("result", t.result_bytes + " B")),
    table(["field", "value"], [["submitted", time(t.submitted_ms)], ["updated", time(t.updated_ms)], ["capabilities", t.capabilities.join(", ")],
      ["last error", t.last_error], ["dead letter reason", t.dead_letter_reason || "–"], ["cancel reason", t.cancel_reason],
      ["workflow", t.workflow_id ? h("a", { href: "#workflows" }, String(t.workflow_id)) : "–"], ["labels", JSON.stringify(t.labels)]]),
    h("h2", null, "Attempts"),
    rows.length ? table(["#attempt", "agent", "#fencing token", "assigned", "ended", "outcome", "error"], rows, { id: "attempts" }) : h("p", { class: "muted" }, "Not assigned yet."),
  ];
}

function decisionsPage() {
  const listing = state.listing;
  if (!listing) return [h("p", { class: "muted" }, "Loading…")];
  const boxes = listing.decisions.map((d) => {
    const most = Math.max(1, ...Object.values(d.tally));
    const tally = Object.entries(d.tally).map(([option, count]) => [option, h("span", { class: "bar", style: "width:" + (count / most) * 120 + "px" }), String(count)]);
    const votes = d.votes.map((v) => [v.voter, v.choice, v.rationale, time(v.cast_ms)]);
    return h("div", { class: "box decision", id: "decision-" + d.id },
      h("div", null, h("b", null, "#" + d.id + " " + d.question), " ", badge(d.status), d.outcome ? " → " + d.outcome : ""),
      h("p", { class: "muted" }, "rule " + d.rule + "; voters " + d.voters.join(", ") + (d.reason ? "; " + d.reason : "")),
      table(["option", "tally", "#votes"], tally), votes.length ? table(["voter", "choice", "rationale", "cast"], votes) : h("p", { class: "muted" }, "No votes yet."));
  });
  return [h("h2", null, "Decisions"), boxes.length ? boxes : h("p", { class: "muted" }, "No decisions."),
    listing.more ? h("a", { href: "#decisions?after_id=" + listing.next_after_id }, "Next page") : null];
}

// A step's layer: one more than the deepest step it follows.
function layers(steps) {
  const depth = [];
  steps.forEach((s, i) => { depth[i] = s.after.reduce((d, a) => Math.max(d, depth[a] + 1), 0); });
  return depth;
}

function workflowGraph(w) {
  const svgNs = "http://www.w3.org/2000/svg";
  const el = (tag, attrs, text) => {
    const e = document.createElementNS(svgNs, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const depth = layers(w.steps);
  const rowOf = {}, pos = [];
  depth.forEach((d, i) => { rowOf[d] = (rowOf[d] || 0) + 1; pos[i] = [d, rowOf[d] - 1]; });
  const [bw, bh, gx, gy] = [170, 46, 60, 16];
  const width = (Math.max(0, ...depth) + 1) * (bw + gx), height = Math.max(1, ...Object.values(rowOf)) * (bh + gy);
  const svg = el("svg", { width, height, class: "graph", "data-workflow": w.id });
  const xy = (i) => [pos[i][0] * (bw + gx), pos[i][1] * (bh + gy)];
  w.steps.forEach((s, i) => s.after.forEach((a) => {
    const [x1, y1] = xy(a), [x2, y2] = xy(i);
    svg.append(el("line", { x1: x1 + bw, y1: y1 + bh / 2, x2, y2: y2 + bh / 2, stroke: "#8a93a6" }));
  }));
  const fill = { succeeded: "#d4f2df", running: "#dbe6ff", waiting: "#f1f2f5", failed: "#fbd9d9", timedout: "#fbd9d9", canceled: "#e7e3f3", skipped: "#e7e3f3" };
  w.steps.forEach((s, i) => {
    const [x, y] = xy(i);
    const g = el("g", { class: "step", "data-step": s.name, "data-state": s.state });
    g.append(el("rect", { x, y, width: bw, height: bh, rx: 6, fill: fill[s.state] || "#fff", stroke: "#8a93a6" }));
    g.append(el("text", { x: x + 8, y: y + 18 }, s.name + (s.kind === "decision" ? " (vote)" : "")));
    const detail = s.state + (s.tasks.length ? " · task " + s.tasks.join(",") : "") + (s.outcome ? " → " + s.outcome : "");
    g.append(el("text", { x: x + 8, y: y + 36, fill: "#4a5367" }, detail));
    svg.append(g);
  });
  return svg;
}

function workflowsPage() {
  const listing = state.listing;
  if (!listing) return [h("p", { class: "muted" }, "Loading…")];
  const boxes = listing.workflows.map((w) => h("div", { class: "box workflow", id: "workflow-" + w.id },
    h("div", null, h("b", null, "#" + w.id + " " + w.name + " v" + w.version), " ", badge(w.state), " ", h("span", { class: "muted" }, "started " + time(w.created_ms))),
    w.error ? h("p", null, w.error) : null, workflowGraph(w)));
  return [h("h2", null, "Workflows"), boxes.length ? boxes : h("p", { class: "muted" }, "No workflow instances."),
    listing.more ? h("a", { href: "#workflows?after_id=" + listing.next_after_id }, "Next page") : null];
}

function locksPage() {
  const listing = state.listing;
  if (!listing) return [h("p", { class: "muted" }, "Loading…")];
  const rows = listing.locks.map((l) => {
    const used = l.holders.reduce((n, g) => n + g.permits, 0);
    const holders = l.holders.map((g) => g.owner + " #" + g.token + (g.expires_ms ? " until " + time(g.expires_ms) : "")).join(", ");
    return [l.kind, l.name, holders || "–", used + " / " + l.limit, String(l.waiters)];
  });
  return [h("h2", null, "Locks, semaphores and elections"),
    rows.length ? table(["kind", "name", "holders (owner #fencing token)", "permits", "#waiting"], rows, { id: "locks" }) : h("p", { class: "muted" }, "No locks."),
    listing.more ? h("p", { class: "muted" }, "The first 200 are shown.") : null];
}

const pages = { cluster: clusterPage, queues: queuesPage, agents: agentsPage, tasks: tasksPage, task: taskPage, decisions: decisionsPage, workflows: workflowsPage, locks: locksPage };

// The URL of the listing the page shows, if it shows one.
function listingUrl(r) {
  if (r.page === "tasks") return "/api/tasks?" + r.params;
  if (r.page === "task") return "/api/tasks/" + encodeURIComponent(r.arg || "");
  if (r.page === "decisions" || r.page === "workflows") return "/api/" + r.page + "?" + r.params;
  if (r.page === "locks") return "/api/locks";
  return null;
}

async function refreshListing(force) {
  const r = route(), url = listingUrl(r), o = state.overview;
  if (!url || !o) return;
  if (!force && url === state.listingKey && o.applied === state.listingApplied) return;
  const applied = o.applied;
  try {
    const listing = await getJson(url);
    if (url === listingUrl(route())) Object.assign(state, { listing, listingKey: url, listingApplied: applied });
  } catch (error) {
    Object.assign(state, { listing: { error: String(error.message) }, listingKey: url, listingApplied: applied });
  }
  render();
}

function render() {
  const r = route(), o = state.overview;
  for (const link of document.querySelectorAll("#nav a")) {
    const page = link.getAttribute("href").slice(1);
    link.classList.toggle("active", page === r.page || (page === "tasks" && r.page === "task"));
  }
  if (!o) return;
  const page = pages[r.page] || clusterPage;
  if (listingUrl(r) !== state.listingKey) state.listing = null;
  const content = page(o, r);
  const main = document.getElementById("page");
  main.replaceChildren(...content.flat().filter((c) => c));
  main.dataset.page = r.page;
  main.dataset.applied = o.applied;
  document.title = "Conclave · node " + o.node.id + " · " + r.page;
}

function update(overview) {
  state.overview = overview;
  throughput(overview);
  const r = route();
  // Keep a form being typed into: re-render the tasks page only when its listing changes.
  if (!(r.page === "tasks" && document.activeElement && document.activeElement.form)) render();
  refreshListing(false);
}

function connect() {
  const live = document.getElementById("live");
  const events = new EventSource("/api/events");
  events.addEventListener("overview", (event) => update(JSON.parse(event.data)));
  events.onopen = () => { live.textContent = "live"; live.className = "live on"; };
  events.onerror = () => {
    live.textContent = "reconnecting"; live.className = "live off";
    // Refused (too many streams open) rather than cut: poll instead.
    if (events.readyState === EventSource.CLOSED) setInterval(poll, 1000);
  };
}

window.addEventListener("hashchange", () => { state.listing = null; state.listingKey = ""; render(); refreshListing(true); });
function poll() {
  const live = document.getElementById("live");
  getJson("/api/overview").then((overview) => {
    live.textContent = "polling"; live.className = "live on";
    update(overview);
  }).catch(() => { live.textContent = "unreachable"; live.className = "live off"; });
}

getJson("/api/overview").then(update).catch((error) => {
  document.getElementById("page").replaceChildren(h("p", null, "Cannot read this node: " + error.message));
});
if (new URLSearchParams(location.search).has("poll")) setInterval(poll, 1000);
else connect();
