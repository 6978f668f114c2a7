// Agora dashboard: polls this node's JSON API once a second and renders the
// cluster. Plain DOM, no framework, no external resources; text from the
// cluster is only ever set with textContent (never parsed as HTML).
"use strict";

(function () {
  const POLL_MS = 1000;
  const MAX_ROWS = 500;
  const STATES = ["staging", "starting", "running", "finished", "failed", "killed", "lost"];
  const ACTIVE = new Set(["staging", "starting", "running"]);

  const ui = { state: "all", search: "", log: null };
  let last = null;
  let failures = 0;

  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------ the token
  // The API needs 'Authorization: Bearer TOKEN' (the agent's
  // --http-token-file) unless the agent serves reads publicly. The page
  // takes it from the sign-in form or from ?token=TOKEN in its address
  // (removed from the address at once) and keeps it in this browser's
  // local storage for this node's address until "sign out".
  const TOKEN_KEY = "agora-api-token";

  function storedToken() {
    try { return localStorage.getItem(TOKEN_KEY) || ""; } catch (_) { return ""; }
  }

  function storeToken(t) {
    try {
      if (t) localStorage.setItem(TOKEN_KEY, t);
      else localStorage.removeItem(TOKEN_KEY);
    } catch (_) { /* storage disabled: the token lasts for this page only */ }
    ui.token = t;
    $("signout").hidden = !t;
  }

  function takeTokenFromAddress() {
    const params = new URLSearchParams(location.search);
    const t = params.get("token");
    if (t === null) return;
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
    storeToken(t.trim());
  }

  function authHeaders(accept) {
    const h = { Accept: accept };
    if (ui.token) h.Authorization = "Bearer " + ui.token;
    return h;
  }

  function showLogin(message) {
    const box = $("login");
    if (box.hidden) {
      box.hidden = false;
      $("login-token").value = "";
      $("login-token").focus();
    }
    $("login-note").textContent = message;
  }

  // Opens an API answer that needs the token in a new tab (a plain link
  // cannot send the header).
  async function openAuthed(ev, url) {
    ev.preventDefault();
    try {
      const r = await fetch(url, { headers: authHeaders("text/plain"), cache: "no-store" });
      const text = await r.text();
      if (!r.ok) throw new Error(url + ": " + r.status + " " + text);
      const blob = URL.createObjectURL(new Blob([text], { type: "text/plain;charset=utf-8" }));
      window.open(blob, "_blank", "noopener");
      setTimeout(() => URL.revokeObjectURL(blob), 60000);
    } catch (e) {
      showBanner([e.message]);
    }
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function pct(x) {
    return (Math.round(x * 1000) / 10).toFixed(x >= 0.1 || x === 0 ? 0 : 1) + "%";
  }

  function cores(millis) {
    const c = millis / 1000;
    return Number.isInteger(c) ? String(c) : c.toFixed(c < 10 ? 2 : 1).replace(/0+$/, "");
  }

  function mib(m) {
    if (m >= 1024 * 1024) return (m / 1048576).toFixed(1).replace(/\.0$/, "") + " TiB";
    if (m >= 1024) return (m / 1024).toFixed(1).replace(/\.0$/, "") + " GiB";
    return m + " MiB";
  }

  function utilClass(u) {
    if (u < 0.25) return "u0";
    if (u < 0.5) return "u1";
    if (u < 0.75) return "u2";
    if (u < 0.9) return "u3";
    return "u4";
  }

  // Natural order for ids such as "batch.2" < "batch.10".
  const collator = new Intl.Collator(undefined, { numeric: true });

  async function getJson(path) {
    const r = await fetch(path, { headers: authHeaders("application/json"), cache: "no-store" });
    let body = null;
    try { body = await r.json(); } catch (_) { body = null; }
    if (!r.ok) {
      const msg = body && body.error ? body.error : r.status + " " + r.statusText;
      const err = new Error(path + ": " + msg);
      err.status = r.status;
      err.detail = msg;
      throw err;
    }
    return body;
  }

  async function poll() {
    const results = await Promise.allSettled([
      getJson("/api/v1/cluster"),
      getJson("/api/v1/nodes"),
      getJson("/api/v1/tasks"),
      getJson("/api/v1/frameworks"),
    ]);
    const refused = results.find((r) => r.status === "rejected" && r.reason.status === 401);
    if (refused) {
      showLogin(ui.token
        ? "The token was not accepted: " + refused.reason.detail
        : "This node's API needs its token (the content of the agent's --http-token-file).");
      const conn = $("conn");
      conn.className = "conn conn-wait";
      conn.textContent = "signed out";
      return;
    }
    $("login").hidden = true;
    const errors = results.filter((r) => r.status === "rejected").map((r) => r.reason.message);
    const val = (i, fallback) => (results[i].status === "fulfilled" ? results[i].value : fallback);
    const data = {
      cluster: val(0, last && last.cluster),
      nodes: val(1, last && last.nodes),
      tasks: val(2, last && last.tasks),
      frameworks: val(3, last && last.frameworks),
    };
    const conn = $("conn");
    if (errors.length === results.length) {
      failures += 1;
      conn.className = "conn conn-bad";
      conn.textContent = "unreachable";
    } else {
      failures = 0;
      conn.className = "conn conn-ok";
      conn.textContent = "live";
    }
    showBanner(errors);
    if (data.cluster && data.nodes && data.frameworks) {
      last = data;
      render(data);
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    }
  }

  function showBanner(errors) {
    const b = $("banner");
    if (errors.length === 0) {
      b.hidden = true;
      return;
    }
    b.hidden = false;
    b.textContent = "Some data could not be refreshed (showing the last known values): " + errors.join("; ");
  }

  function render(d) {
    renderCards(d.cluster);
    renderNodes(d.nodes, d.tasks ? d.tasks.tasks : []);
    renderTasks(d.tasks ? d.tasks.tasks : [], d.cluster);
    renderFrameworks(d.frameworks.frameworks, d.cluster.cells);
  }

  function setMeter(id, frac) {
    const m = $(id);
    m.style.setProperty("width", Math.min(100, frac * 100).toFixed(1) + "%");
    m.className = "meter-fill " + utilClass(frac);
  }

  function renderCards(c) {
    $("self-node").textContent = c.node_id;
    $("nodes-alive").textContent = c.nodes.alive;
    $("nodes-total").textContent = c.nodes.total;
    $("nodes-note").textContent = c.nodes.dead > 0 ? c.nodes.dead + " dead" : "all healthy";
    const r = c.resources;
    $("cpu-used").textContent = cores(r.used.cpu_millis);
    $("cpu-total").textContent = cores(r.total.cpu_millis);
    const cu = c.utilization.cpu || 0;
    setMeter("cpu-meter", cu);
    $("cpu-note").textContent = pct(cu) + " allocated · " + cores(r.free.cpu_millis) + " free";
    $("mem-used").textContent = mib(r.used.mem_mib);
    $("mem-total").textContent = mib(r.total.mem_mib);
    const mu = c.utilization.mem || 0;
    setMeter("mem-meter", mu);
    $("mem-note").textContent = pct(mu) + " allocated · " + mib(r.free.mem_mib) + " free";
    const t = c.tasks;
    $("tasks-active").textContent = t.staging + t.starting + t.running;
    const parts = [t.running + " running", t.finished + " finished"];
    if (t.failed) parts.push(t.failed + " failed");
    if (t.lost) parts.push(t.lost + " lost");
    if (c.tasks_scope !== "cluster") parts.push("this node only");
    $("tasks-note").textContent = parts.join(" · ");
    $("fw-total").textContent = c.frameworks.total;
    const cells = c.cells.length;
    $("cells-note").textContent = c.frameworks.connected + " connected to this node · " +
      (cells === 1 ? "1 cell" : cells + " cells");
  }

  function renderNodes(n, tasks) {
    const grid = $("node-grid");
    const running = {};
    for (const t of tasks) {
      if (t.node && ACTIVE.has(t.state)) running[t.node] = (running[t.node] || 0) + 1;
    }
    grid.replaceChildren();
    if (n.nodes.length === 0) {
      grid.appendChild(el("div", "empty-note", "No nodes in this node's gossip view yet."));
      return;
    }
    for (const node of n.nodes) {
      const tile = el("div", "node");
      tile.dataset.nodeId = node.id;
      if (!node.alive) tile.classList.add("dead");
      else tile.classList.add(utilClass(node.utilization));
      if (node.is_self) tile.classList.add("self");
      const attrs = Object.entries(node.attrs).map(([k, v]) => k + "=" + v);
      tile.title = [
        node.id + (node.is_self ? " (this node)" : ""),
        "address: " + node.addr,
        "state: " + (node.alive ? "alive" : "dead"),
        "cpu: " + cores(node.total.cpu_millis - node.free.cpu_millis) + " / " + cores(node.total.cpu_millis) + " cores used",
        "memory: " + mib(node.total.mem_mib - node.free.mem_mib) + " / " + mib(node.total.mem_mib) + " used",
        "active tasks: " + (running[node.id] || 0),
        "",
        "attributes:",
      ].concat(attrs.length ? attrs.map((a) => "  " + a) : ["  (none)"]).join("\n");
      tile.appendChild(el("div", "nid", node.id));
      const shown = ["zone", "os", "arch"].filter((k) => node.attrs[k]).map((k) => node.attrs[k]);
      tile.appendChild(el("div", "nattr", shown.join(" · ") || node.addr));
      const count = running[node.id] || 0;
      const tag = node.alive ? count + (count === 1 ? " task" : " tasks") : "dead";
      tile.appendChild(el("span", "ntag", tag));
      const bars = el("div", "nbars");
      const dims = [
        ["cpu", node.total.cpu_millis, node.free.cpu_millis],
        ["mem", node.total.mem_mib, node.free.mem_mib],
      ];
      for (const [label, total, free] of dims) {
        const u = total > 0 ? (total - free) / total : 0;
        bars.appendChild(el("span", "", label));
        const bar = el("div", "nbar");
        const fill = el("div");
        fill.style.setProperty("width", Math.min(100, u * 100).toFixed(1) + "%");
        bar.appendChild(fill);
        bars.appendChild(bar);
        bars.appendChild(el("span", "npct", pct(u)));
      }
      tile.appendChild(bars);
      grid.appendChild(tile);
    }
  }

  function renderStateChips(counts) {
    const box = $("state-filters");
    box.replaceChildren();
    const total = STATES.reduce((s, k) => s + (counts[k] || 0), 0);
    for (const key of ["all"].concat(STATES)) {
      const chip = el("a", "chip" + (ui.state === key ? " on" : ""), key);
      chip.href = "#";
      chip.dataset.state = key;
      chip.appendChild(el("span", "n", key === "all" ? total : counts[key] || 0));
      box.appendChild(chip);
    }
  }

  function renderTasks(tasks, cluster) {
    const counts = {};
    for (const t of tasks) counts[t.state] = (counts[t.state] || 0) + 1;
    renderStateChips(counts);
    const q = ui.search.toLowerCase();
    const rows = tasks
      .filter((t) => ui.state === "all" || t.state === ui.state)
      .filter((t) => !q || [t.id, t.name, t.node || "", t.framework].some((s) => s.toLowerCase().includes(q)))
      .sort((a, b) => {
        const aa = ACTIVE.has(a.state) ? 0 : 1;
        const bb = ACTIVE.has(b.state) ? 0 : 1;
        return aa - bb || collator.compare(a.id, b.id);
      });
    const body = $("task-rows");
    body.replaceChildren();
    if (rows.length === 0) {
      const tr = el("tr");
      const td = el("td", "empty", tasks.length ? "No task matches the filter." : "No tasks yet.");
      td.colSpan = 9;
      tr.appendChild(td);
      body.appendChild(tr);
    }
    for (const t of rows.slice(0, MAX_ROWS)) {
      const tr = el("tr");
      tr.dataset.taskId = t.id;
      tr.appendChild(el("td", "id", t.id));
      tr.appendChild(el("td", "", t.name));
      const st = el("td");
      const badge = el("span", "state s-" + t.state, t.state);
      if (t.reason) badge.title = t.reason;
      st.appendChild(badge);
      tr.appendChild(st);
      tr.appendChild(el("td", "tnode", t.node || "—"));
      tr.appendChild(el("td", "", t.framework));
      tr.appendChild(el("td", "num", cores(t.resources.cpu_millis)));
      tr.appendChild(el("td", "num", t.mem_mib ? mib(t.mem_mib) : "—"));
      tr.appendChild(el("td", "num", t.exit_code === null ? "" : t.exit_code));
      const lt = el("td");
      if (t.node) {
        const a = el("a", "", "logs");
        a.href = "#logs/" + encodeURIComponent(t.id);
        lt.appendChild(a);
      }
      tr.appendChild(lt);
      body.appendChild(tr);
    }
    const notes = [];
    if (rows.length > MAX_ROWS) notes.push("showing " + MAX_ROWS + " of " + rows.length + " matching tasks");
    else notes.push(rows.length + " of " + tasks.length + " tasks");
    if (cluster.unreachable.length) notes.push("not listed (unreachable): " + cluster.unreachable.join(", "));
    $("task-foot").textContent = notes.join(" · ");
  }

  function renderFrameworks(fws, cells) {
    const list = $("fw-list");
    list.replaceChildren();
    if (fws.length === 0) list.appendChild(el("div", "empty-note", "No frameworks registered."));
    const sorted = fws.slice().sort((a, b) => b.dominant_share - a.dominant_share || collator.compare(a.name, b.name));
    for (const f of sorted) {
      const box = el("div", "fw");
      const top = el("div", "fw-top");
      const name = el("span", "fw-name");
      const state = f.connected === true ? "on" : f.connected === false ? "off" : "remote";
      name.appendChild(el("span", "dot " + state));
      name.appendChild(document.createTextNode(f.name));
      name.title = f.connected === true ? "connected to this node"
        : f.connected === false ? "disconnected (its tasks are kept for the failover timeout)"
        : "homed on " + (f.home_node || "another node");
      top.appendChild(name);
      top.appendChild(el("span", "fw-meta", f.active_tasks + " active · weight " + f.weight));
      box.appendChild(top);
      box.appendChild(el("div", "fw-id", f.id + (f.home_node ? " @ " + f.home_node : "")));
      const share = el("div", "share");
      const bar = el("div", "bar");
      const fill = el("div");
      fill.style.setProperty("width", Math.min(100, f.dominant_share * 100).toFixed(1) + "%");
      bar.appendChild(fill);
      share.appendChild(bar);
      share.appendChild(el("span", "pct", pct(f.dominant_share)));
      share.title = "allocated: " + cores(f.allocated.cpu_millis) + " cores, " + mib(f.allocated.mem_mib);
      box.appendChild(share);
      list.appendChild(box);
    }
    const cl = $("cell-list");
    cl.replaceChildren();
    if (cells.length === 0) cl.appendChild(el("div", "empty-note", "No cell information yet."));
    for (const c of cells) {
      const box = el("div", "cell");
      box.appendChild(el("strong", "", c.id));
      let text = " · " + c.members + (c.members === 1 ? " node" : " nodes");
      if (c.alive !== undefined && c.alive !== c.members) text += " (" + c.alive + " alive)";
      if (c.home && cells.length > 1) text += " · home";
      if (c.imported) text += " · imported";
      if (c.cpus_total !== undefined) text += " · " + c.cpus_free + "/" + c.cpus_total + " cores free";
      if (c.gateways && c.gateways.length) text += " · gateways " + c.gateways.join(", ");
      box.appendChild(document.createTextNode(text));
      cl.appendChild(box);
    }
  }

  // ------------------------------------------------------------ logs view

  function openLogs(taskId, stream) {
    ui.log = { taskId: taskId, stream: stream, offset: 0, busy: false };
    $("log-view").hidden = false;
    $("log-title").textContent = taskId;
    $("log-text").textContent = "";
    $("log-foot").textContent = "loading…";
    const base = "/api/v1/tasks/" + encodeURIComponent(taskId) + "/logs?stream=" + stream;
    $("log-raw").href = base + "&format=text&max_bytes=262144";
    $("log-raw").dataset.authed = "1";
    for (const c of $("log-streams").children) c.classList.toggle("on", c.dataset.stream === stream);
    readLogs();
  }

  function closeLogs() {
    ui.log = null;
    $("log-view").hidden = true;
  }

  async function readLogs() {
    const l = ui.log;
    if (!l || l.busy) return;
    l.busy = true;
    try {
      for (let i = 0; i < 16 && ui.log === l; i++) {
        const url = "/api/v1/tasks/" + encodeURIComponent(l.taskId) + "/logs?stream=" + l.stream +
          "&offset=" + l.offset + "&max_bytes=262144";
        const chunk = await getJson(url);
        if (ui.log !== l) return;
        if (chunk.data) $("log-text").appendChild(document.createTextNode(chunk.data));
        l.offset = chunk.next_offset;
        $("log-foot").textContent = l.offset + " bytes" + (chunk.eof ? " · end of output so far (following)" : "");
        if (chunk.eof || !chunk.data) break;
      }
    } catch (e) {
      if (ui.log === l) $("log-foot").textContent = e.message;
    } finally {
      l.busy = false;
    }
  }

  function route() {
    const m = /^#logs\/([^/]+)(?:\/(stdout|stderr))?$/.exec(location.hash);
    if (m) openLogs(decodeURIComponent(m[1]), m[2] || "stdout");
    else if (ui.log) closeLogs();
  }

  // ------------------------------------------------------------ wiring

  function init() {
    takeTokenFromAddress();
    storeToken(ui.token || storedToken());
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      storeToken($("login-token").value.trim());
      $("login").hidden = true;
      poll().catch((e) => showBanner([e.message]));
    });
    $("signout").addEventListener("click", (ev) => {
      ev.preventDefault();
      storeToken("");
      last = null;
      poll().catch((e) => showBanner([e.message]));
    });
    $("log-raw").addEventListener("click", (ev) => openAuthed(ev, $("log-raw").getAttribute("href")));
    $("metrics-link").addEventListener("click", (ev) => openAuthed(ev, "/metrics"));
    $("state-filters").addEventListener("click", (ev) => {
      const chip = ev.target.closest("[data-state]");
      if (!chip) return;
      ev.preventDefault();
      ui.state = chip.dataset.state;
      if (last) render(last);
    });
    $("task-search").addEventListener("input", (ev) => {
      ui.search = ev.target.value.trim();
      if (last) render(last);
    });
    $("log-streams").addEventListener("click", (ev) => {
      const chip = ev.target.closest("[data-stream]");
      if (!chip || !ui.log) return;
      ev.preventDefault();
      location.hash = "#logs/" + encodeURIComponent(ui.log.taskId) + "/" + chip.dataset.stream;
    });
    $("log-close").addEventListener("click", (ev) => {
      ev.preventDefault();
      history.pushState(null, "", location.pathname);
      closeLogs();
    });
    $("log-view").addEventListener("click", (ev) => {
      if (ev.target === $("log-view")) $("log-close").click();
    });
    document.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape" && ui.log) $("log-close").click();
    });
    window.addEventListener("hashchange", route);
    route();

    const tick = async () => {
      if (!document.hidden) {
        try { await poll(); } catch (e) { showBanner([e.message]); }
        if (ui.log) readLogs();
      }
      // Back off gently while the node is unreachable.
      setTimeout(tick, failures > 0 ? Math.min(10000, POLL_MS * (1 + failures)) : POLL_MS);
    };
    tick();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
