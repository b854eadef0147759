/**
 * The inspector's page: HTML, style and script, served by server.ts.
 *
 * The script subscribes to `/events` and redraws on every snapshot:
 * deadlocks and possible deadlocks first (red and amber banners, with how
 * long each has stood), the wait-for graph (interpreters on a circle, an
 * arrow from each waiter to each party that could end its wait; deadlock
 * cycles red, possible ones amber, async waits dashed), channels with a
 * fill bar against capacity (bytes against the budget when unbounded),
 * who holds each end and who waits, interpreters and their waits, and
 * pipeline stages with busy / back-pressured / idle time.
 *
 * Every name is rendered as text (textContent, SVG text nodes): nothing
 * from a snapshot is ever parsed as HTML, and the server's
 * Content-Security-Policy forbids inline scripts as a second fence.
 * The script is plain ES2017 in a string (no template literals inside).
 */

export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>interpreters inspector</title>
<link rel="stylesheet" href="/app.css">
</head>
<body>
<header>
  <h1>interpreters inspector</h1>
  <span id="status" class="status">connecting…</span>
  <span id="rate" class="rate" data-rate="0"></span>
</header>
<section id="alerts" aria-live="polite"></section>
<main>
  <section class="panel graph-panel">
    <h2>Wait-for graph</h2>
    <p class="hint">An arrow from A to B: A waits for something only B (or others it points to) can do. Red: a deadlock. Amber: a possible deadlock (an async waiter could still act). Dashed: an async wait.</p>
    <svg id="graph" role="img" aria-label="wait-for graph" viewBox="0 0 520 420" width="520" height="420"></svg>
  </section>
  <section class="panel">
    <h2>Interpreters <span id="interpreter-count" class="count"></span></h2>
    <table id="interpreters">
      <thead><tr><th>id</th><th>name</th><th>state</th><th>waits</th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
  <section class="panel wide">
    <h2>Channels <span id="channel-count" class="count"></span></h2>
    <table id="channels">
      <thead><tr><th>id</th><th>name</th><th>capacity</th><th>fill</th><th>senders → receivers</th><th>waiting</th><th>sent / received</th><th>dropped</th><th>state</th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
  <section class="panel wide">
    <h2>Pipelines</h2>
    <div id="pipelines"><p class="empty">no pipeline running in the inspected thread</p></div>
  </section>
</main>
<script src="/app.js"></script>
</body>
</html>
`;

export const PAGE_CSS = String.raw`
:root { --fg: #1d232b; --muted: #68717d; --line: #d9dee5; --bg: #f7f8fa; --panel: #fff;
  --ok: #2b8a3e; --wait: #b7791f; --dead: #c92a2a; --maybe: #e8890c; --idle: #8a94a3; --fill: #3b6fd8; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; align-items: baseline; gap: 16px; padding: 10px 18px; background: #20262e; color: #fff; }
header h1 { font-size: 16px; margin: 0; font-weight: 600; }
.status { color: #b9c2cf; } .rate { color: #b9c2cf; margin-left: auto; font-variant-numeric: tabular-nums; }
#alerts { padding: 0 18px; }
.alert { margin: 10px 0 0; padding: 8px 12px; border-radius: 6px; border-left: 5px solid; background: #fff; }
.alert.deadlock { border-color: var(--dead); background: #fff0f0; }
.alert.possible { border-color: var(--maybe); background: #fff7eb; }
.alert b { margin-right: 6px; }
main { display: grid; grid-template-columns: 560px 1fr; gap: 14px; padding: 14px 18px; align-items: start; }
.wide { grid-column: 1 / -1; }
.panel { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; overflow-x: auto; }
h2 { font-size: 14px; margin: 0 0 8px; } .count { color: var(--muted); font-weight: 400; }
.hint { color: var(--muted); font-size: 12px; margin: 0 0 6px; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: middle; white-space: nowrap; }
th { color: var(--muted); font-weight: 500; font-size: 12px; }
td.name { white-space: pre; max-width: 260px; overflow: hidden; text-overflow: ellipsis; }
tr.corrupt td { background: #fff0f0; } tr.closed td { color: var(--muted); }
.state-running { color: var(--ok); } .state-waiting { color: var(--wait); } .state-idle { color: var(--idle); } .state-exited { color: var(--idle); text-decoration: line-through; }
.bar-label { font-size: 12px; color: var(--muted); margin-left: 6px; }
.empty { color: var(--muted); margin: 4px 0; }
.node circle { stroke: #fff; stroke-width: 2; }
.node text { font-size: 11px; fill: var(--fg); }
.node.running circle { fill: var(--ok); } .node.waiting circle { fill: var(--wait); } .node.idle circle { fill: var(--idle); } .node.exited circle { fill: #ccd2da; }
.node.in-deadlock circle { stroke: var(--dead); stroke-width: 4; }
.edge { stroke: #7b8594; stroke-width: 1.5; fill: none; }
.edge.async { stroke-dasharray: 5 4; }
.edge.possible { stroke: var(--maybe); stroke-width: 3; }
.edge.deadlock { stroke: var(--dead); stroke-width: 3.5; }
.edge-label { font-size: 10px; fill: var(--muted); }
.stage-bars rect.busy { fill: var(--fill); } .stage-bars rect.backpressured { fill: var(--maybe); } .stage-bars rect.idle { fill: #d9dee5; }
.bottleneck { color: var(--dead); font-weight: 600; }
`;

export const PAGE_JS = String.raw`(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var frameTimes = [];

  function reviver(key, value) { return value === "Infinity" && (key === "capacity" || key === "maxBufferBytes") ? Infinity : value; }
  function h(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function s(tag, attrs, text) {
    var node = document.createElementNS(SVG, tag);
    for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) node.setAttribute(k, String(attrs[k]));
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function fmtMs(ms) { return ms < 1000 ? Math.round(ms) + " ms" : ms < 60000 ? (ms / 1000).toFixed(1) + " s" : Math.floor(ms / 60000) + " min " + Math.round((ms % 60000) / 1000) + " s"; }
  function fmtBytes(n) { return n < 1024 ? n + " B" : n < 1048576 ? (n / 1024).toFixed(1) + " KiB" : (n / 1048576).toFixed(1) + " MiB"; }
  function fmtCount(n) { return n < 10000 ? String(n) : n < 1e7 ? (n / 1000).toFixed(1) + "k" : (n / 1e6).toFixed(1) + "M"; }
  function cap(c) { return c === Infinity ? "∞" : String(c); }

  function names(snapshot) {
    var map = {};
    snapshot.interpreters.forEach(function (i) { map[i.id] = i.name; });
    return map;
  }
  function who(map, id) { return id === 0 ? "main" : (map[id] !== undefined ? id + " " + map[id] : String(id)); }
  function describeParty(p) {
    return "interpreter " + p.interpreter.id + " \u201c" + p.interpreter.name + "\u201d " + p.op + (p.channel ? " on channel " + p.channel.id + (p.channel.name ? " \u201c" + p.channel.name + "\u201d" : "") : "");
  }

  function renderAlerts(snapshot) {
    var box = document.getElementById("alerts");
    clear(box);
    if (snapshot.error) box.appendChild(h("p", "alert possible", snapshot.error));
    snapshot.deadlocks.forEach(function (d) {
      var p = h("p", "alert deadlock");
      p.appendChild(h("b", null, "Deadlock"));
      p.appendChild(document.createTextNode("for " + fmtMs(d.sinceMs) + ": " + d.cycle.map(describeParty).join(" → ") + " → back to the first."));
      box.appendChild(p);
    });
    snapshot.possibleDeadlocks.forEach(function (d) {
      var p = h("p", "alert possible");
      p.appendChild(h("b", null, "Possible deadlock"));
      p.appendChild(document.createTextNode("for " + fmtMs(d.sinceMs) + " (only an async wait keeps it open): " + d.cycle.map(describeParty).join(" → ") + "."));
      box.appendChild(p);
    });
  }

  function cycleEdges(list) {
    var set = {};
    list.forEach(function (d) {
      var ids = d.cycle.map(function (p) { return p.interpreter.id; });
      ids.forEach(function (id) { set["n" + id] = true; });
      for (var i = 0; i < ids.length; i++) {
        for (var j = 0; j < ids.length; j++) set[ids[i] + ">" + ids[j]] = true;
      }
    });
    return set;
  }

  function renderGraph(snapshot) {
    var svg = document.getElementById("graph");
    clear(svg);
    var defs = s("defs", {});
    [["arrow", "#7b8594"], ["arrow-dead", "#c92a2a"], ["arrow-maybe", "#e8890c"]].forEach(function (m) {
      var marker = s("marker", { id: m[0], viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
      marker.appendChild(s("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: m[1] }));
      defs.appendChild(marker);
    });
    svg.appendChild(defs);
    var nodes = snapshot.interpreters.filter(function (i) { return i.state !== "exited"; });
    var inEdges = {};
    snapshot.waitFor.forEach(function (e) { inEdges[e.from] = true; inEdges[e.to] = true; });
    snapshot.interpreters.forEach(function (i) { if (i.state === "exited" && inEdges[i.id]) nodes.push(i); });
    if (nodes.length === 0) {
      svg.appendChild(s("text", { x: 20, y: 30, "class": "edge-label" }, "no interpreters"));
      return;
    }
    var cx = 260, cy = 215, r = nodes.length === 1 ? 0 : Math.min(165, 60 + nodes.length * 26);
    var pos = {};
    nodes.forEach(function (n, k) {
      var a = -Math.PI / 2 + (2 * Math.PI * k) / nodes.length;
      pos[n.id] = { x: cx + r * Math.cos(a), y: cy + r * Math.sin(a) };
    });
    var dead = cycleEdges(snapshot.deadlocks), maybe = cycleEdges(snapshot.possibleDeadlocks);
    var chanNames = {};
    snapshot.channels.forEach(function (c) { chanNames[c.id] = c.name; });
    var drawn = {};
    snapshot.waitFor.forEach(function (e) {
      var a = pos[e.from], b = pos[e.to];
      if (!a || !b) return;
      var key = e.from + ">" + e.to;
      var cls = "edge" + (e.async ? " async" : "") + (dead[key] ? " deadlock" : maybe[key] ? " possible" : "");
      var marker = dead[key] ? "url(#arrow-dead)" : maybe[key] ? "url(#arrow-maybe)" : "url(#arrow)";
      var label = e.channel !== undefined ? "ch " + e.channel + (chanNames[e.channel] ? " " + chanNames[e.channel] : "") : e.lock !== undefined ? "lock " + e.lock : "";
      var nth = drawn[key] = (drawn[key] || 0) + 1;
      var path, lx, ly;
      if (e.from === e.to) {
        path = "M " + (a.x - 8) + " " + (a.y - 14) + " C " + (a.x - 40) + " " + (a.y - 70) + ", " + (a.x + 40) + " " + (a.y - 70) + ", " + (a.x + 8) + " " + (a.y - 14);
        lx = a.x; ly = a.y - 62 - 10 * (nth - 1);
      } else {
        var dx = b.x - a.x, dy = b.y - a.y, len = Math.sqrt(dx * dx + dy * dy) || 1;
        var ux = dx / len, uy = dy / len;
        var bend = 18 * nth;
        var sx = a.x + ux * 16, sy = a.y + uy * 16, tx = b.x - ux * 18, ty = b.y - uy * 18;
        var mx = (sx + tx) / 2 - uy * bend, my = (sy + ty) / 2 + ux * bend;
        path = "M " + sx + " " + sy + " Q " + mx + " " + my + " " + tx + " " + ty;
        lx = mx; ly = my;
      }
      var edge = s("path", { d: path, "class": cls, "marker-end": marker, "data-from": e.from, "data-to": e.to });
      svg.appendChild(edge);
      if (label) svg.appendChild(s("text", { x: lx, y: ly, "text-anchor": "middle", "class": "edge-label" }, label));
    });
    nodes.forEach(function (n) {
      var p = pos[n.id];
      var g = s("g", { "class": "node " + n.state + (dead["n" + n.id] ? " in-deadlock" : ""), "data-id": n.id, transform: "translate(" + p.x + "," + p.y + ")" });
      g.appendChild(s("circle", { r: 14 }));
      g.appendChild(s("text", { y: 4, "text-anchor": "middle", fill: "#fff", "font-weight": 600 }, n.id));
      g.appendChild(s("text", { y: 30, "text-anchor": "middle" }, n.name.length > 24 ? n.name.slice(0, 23) + "…" : n.name));
      g.appendChild(s("title", {}, "interpreter " + n.id + " " + n.name + " (" + n.state + ")"));
      svg.appendChild(g);
    });
  }

  function fillBar(fraction, cls) {
    var w = 140, f = Math.max(0, Math.min(1, fraction));
    var svg = s("svg", { width: w, height: 12, "class": "bar " + (cls || ""), "data-fill": f.toFixed(3) });
    svg.appendChild(s("rect", { x: 0, y: 0, width: w, height: 12, rx: 3, fill: "#e6e9ee" }));
    svg.appendChild(s("rect", { x: 0, y: 0, width: Math.max(f > 0 ? 2 : 0, f * w), height: 12, rx: 3, fill: f >= 1 ? "#c92a2a" : f >= 0.75 ? "#e8890c" : "#3b6fd8" }));
    return svg;
  }

  function renderChannels(snapshot, map) {
    var body = document.querySelector("#channels tbody");
    clear(body);
    document.getElementById("channel-count").textContent = "(" + snapshot.channels.length + ")";
    if (snapshot.channels.length === 0) {
      var row = h("tr"); var td = h("td", "empty", "no channels"); td.colSpan = 9; row.appendChild(td); body.appendChild(row); return;
    }
    snapshot.channels.forEach(function (c) {
      var tr = h("tr", c.corrupt ? "corrupt" : c.closed ? "closed" : "");
      tr.setAttribute("data-channel", String(c.id));
      tr.appendChild(h("td", null, c.id));
      tr.appendChild(h("td", "name", c.name || "—"));
      tr.appendChild(h("td", null, cap(c.capacity)));
      var fill = h("td", "fill");
      var fraction, label;
      if (c.capacity === Infinity) { fraction = c.maxBufferBytes > 0 ? c.bytes / c.maxBufferBytes : 0; label = c.length + " msgs, " + fmtBytes(c.bytes) + " of " + fmtBytes(c.maxBufferBytes); }
      else if (c.capacity === 0) { fraction = c.length > 0 ? 1 : 0; label = c.length + " offered (rendezvous)"; }
      else { fraction = c.length / c.capacity; label = c.length + " / " + c.capacity; }
      fill.appendChild(fillBar(fraction));
      fill.appendChild(h("span", "bar-label", label));
      tr.appendChild(fill);
      var holders = c.senders.map(function (id) { return who(map, id); }).join(", ") + " → " + c.receivers.map(function (id) { return who(map, id); }).join(", ");
      if (c.inTransit) holders += " (in transit: " + c.inTransit.senders + " send, " + c.inTransit.receivers + " recv)";
      tr.appendChild(h("td", "name", holders));
      var waiting = [];
      if (c.waitingSenders.length) waiting.push("send: " + c.waitingSenders.map(function (id) { return who(map, id); }).join(", "));
      if (c.waitingReceivers.length) waiting.push("recv: " + c.waitingReceivers.map(function (id) { return who(map, id); }).join(", "));
      tr.appendChild(h("td", "name", waiting.join("; ") || "—"));
      tr.appendChild(h("td", null, fmtCount(c.sent) + " / " + fmtCount(c.received)));
      tr.appendChild(h("td", null, c.dropped));
      tr.appendChild(h("td", null, c.corrupt ? "corrupt: " + c.corrupt : c.closed ? "closed" : "open"));
      body.appendChild(tr);
    });
  }

  function renderInterpreters(snapshot, map) {
    var body = document.querySelector("#interpreters tbody");
    clear(body);
    document.getElementById("interpreter-count").textContent = "(" + snapshot.interpreters.length + ")";
    var chanNames = {};
    snapshot.channels.forEach(function (c) { chanNames[c.id] = c.name; });
    snapshot.interpreters.forEach(function (i) {
      var tr = h("tr");
      tr.setAttribute("data-interpreter", String(i.id));
      tr.appendChild(h("td", null, i.id));
      tr.appendChild(h("td", "name", i.name));
      tr.appendChild(h("td", "state-" + i.state, i.state));
      var waits = (i.waiting || []).map(function (w) {
        var target = w.lock !== undefined ? "lock " + w.lock : w.channel !== undefined ? "channel " + w.channel + (chanNames[w.channel] ? " " + chanNames[w.channel] : "") : "";
        return (w.async ? "await " : "") + w.op + " " + target + " for " + fmtMs(w.sinceMs) + (w.timeout ? " (with timeout)" : "");
      });
      tr.appendChild(h("td", "name", waits.join("; ") || "—"));
      body.appendChild(tr);
    });
  }

  function renderPipelines(snapshot) {
    var box = document.getElementById("pipelines");
    clear(box);
    if (!snapshot.pipelines || snapshot.pipelines.length === 0) { box.appendChild(h("p", "empty", "no pipeline running in the inspected thread")); return; }
    snapshot.pipelines.forEach(function (p) {
      box.appendChild(h("h3", null, p.name + " · " + fmtMs(p.elapsedMs) + " · " + p.inFlight + " in flight"));
      var table = h("table");
      var head = h("tr");
      ["stage", "workers", "queued", "busy / back-pressured / idle (ms per s)", "items/s", "in / out", "dropped", "failed", "service p50 / p99"].forEach(function (t) { head.appendChild(h("th", null, t)); });
      table.appendChild(head);
      p.stages.forEach(function (st) {
        var tr = h("tr");
        tr.setAttribute("data-stage", st.name);
        var name = h("td", "name" + (p.bottleneck === st.name ? " bottleneck" : ""), st.name + (p.bottleneck === st.name ? " (bottleneck)" : ""));
        tr.appendChild(name);
        tr.appendChild(h("td", null, st.workers));
        var q = h("td");
        q.appendChild(fillBar(st.capacity === Infinity ? 0 : st.capacity === 0 ? (st.queued > 0 ? 1 : 0) : st.queued / st.capacity));
        q.appendChild(h("span", "bar-label", st.queued + " / " + cap(st.capacity)));
        tr.appendChild(q);
        var bars = s("svg", { width: 160, height: 12, "class": "stage-bars" });
        var total = Math.max(1, st.busyMsPerSecond + st.backpressuredMsPerSecond + st.idleMsPerSecond), x = 0;
        [["busy", st.busyMsPerSecond], ["backpressured", st.backpressuredMsPerSecond], ["idle", st.idleMsPerSecond]].forEach(function (part) {
          var w = (160 * part[1]) / total;
          bars.appendChild(s("rect", { x: x, y: 0, width: w, height: 12, "class": part[0] }));
          x += w;
        });
        var cell = h("td"); cell.appendChild(bars);
        cell.appendChild(h("span", "bar-label", Math.round(st.busyMsPerSecond) + " / " + Math.round(st.backpressuredMsPerSecond) + " / " + Math.round(st.idleMsPerSecond)));
        tr.appendChild(cell);
        tr.appendChild(h("td", null, Math.round(st.itemsPerSecond)));
        tr.appendChild(h("td", null, fmtCount(st.in) + " / " + fmtCount(st.out)));
        tr.appendChild(h("td", null, st.dropped));
        tr.appendChild(h("td", null, st.failed));
        tr.appendChild(h("td", null, Math.round(st.serviceUs.p50) + " / " + Math.round(st.serviceUs.p99) + " µs"));
        table.appendChild(tr);
      });
      box.appendChild(table);
    });
  }

  function render(snapshot) {
    var map = names(snapshot);
    renderAlerts(snapshot);
    renderGraph(snapshot);
    renderChannels(snapshot, map);
    renderInterpreters(snapshot, map);
    renderPipelines(snapshot);
    var now = performance.now();
    frameTimes.push(now);
    while (frameTimes.length && frameTimes[0] < now - 2000) frameTimes.shift();
    var rate = frameTimes.length / 2;
    var rateNode = document.getElementById("rate");
    rateNode.textContent = rate.toFixed(1) + " updates/s";
    rateNode.setAttribute("data-rate", rate.toFixed(1));
    var status = document.getElementById("status");
    status.textContent = "live · " + new Date(snapshot.at).toLocaleTimeString() + (snapshot.detection ? " · deadlock detection: " + snapshot.detection.mode + " after " + snapshot.detection.afterMs + " ms" : "");
    document.body.setAttribute("data-frames", String((Number(document.body.getAttribute("data-frames")) || 0) + 1));
  }

  var events = new EventSource("/events");
  events.onmessage = function (event) {
    var snapshot;
    try { snapshot = JSON.parse(event.data, reviver); } catch (err) { return; }
    render(snapshot);
  };
  events.onerror = function () { document.getElementById("status").textContent = "disconnected: retrying…"; };
})();
`;
