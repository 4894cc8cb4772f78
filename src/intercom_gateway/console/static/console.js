// The live flow: follows /console/stream (server-sent events), shows each decision with
// its destinations, can pause, and draws two sparklines. Hand-written, no library, no
// inline script (the pages' Content-Security-Policy allows scripts of the console only).
"use strict";

(function () {
  const flow = document.getElementById("flow");
  if (!flow) return; // not the live page
  const ROWS = 500; // rows kept on the page
  const SECONDS = 60; // the sparklines' span
  const state = document.getElementById("state");
  const pauseButton = document.getElementById("pause");
  let paused = false;
  let held = [];
  const perSecond = new Map(); // second -> events
  const latencies = []; // the latest decision-to-completion times, ms

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function chip(o) {
    const label = o.result === "forwarded"
      ? `${o.destination} ✓ ${o.purposes.join(", ")}`
      : `${o.destination} ✗ ${o.reason || "withheld"}`;
    const node = el("span", `chip ${o.result}`, label);
    node.dataset.destination = o.destination;
    node.title = o.result === "forwarded"
      ? `forwarded · rules ${o.rules.join(", ")} · ${o.clause || ""}`
      : `withheld · ${o.reason || ""} · ${o.clause || ""}`;
    return node;
  }

  function row(kind, item) {
    const tr = el("tr", kind);
    tr.appendChild(el("td", "", item.at.replace("T", " ").slice(0, 23)));
    if (kind === "decision") {
      tr.dataset.eventId = item.event_id;
      const link = el("a", "", item.event_id.slice(0, 8));
      link.href = flow.dataset.events + encodeURIComponent(item.event_id);
      const cell = el("td");
      cell.appendChild(link);
      tr.appendChild(cell);
      tr.appendChild(el("td", "", `${item.building_id}/${item.dwelling_id}`));
      tr.appendChild(el("td", "", item.event_type));
      const outcomes = el("td");
      item.outcomes.forEach((o) => outcomes.appendChild(chip(o)));
      tr.appendChild(outcomes);
    } else {
      tr.className = "rejected";
      tr.appendChild(el("td", "", "rejected"));
      tr.appendChild(el("td", "", item.topic));
      tr.appendChild(el("td", "", item.reason));
      tr.appendChild(el("td", "", item.detail));
    }
    return tr;
  }

  function show(kind, item) {
    flow.insertBefore(row(kind, item), flow.firstChild);
    while (flow.rows.length > ROWS) flow.deleteRow(flow.rows.length - 1);
  }

  function latency(ms) {
    if (ms === null || ms === undefined) return;
    latencies.push(ms);
    if (latencies.length > SECONDS) latencies.shift();
  }

  function count(item) {
    const second = Math.floor(Date.now() / 1000);
    perSecond.set(second, (perSecond.get(second) || 0) + 1);
    latency(item.latency_ms);
  }

  function spark(id, values) {
    const svg = document.getElementById(id);
    const width = svg.viewBox.baseVal.width;
    const height = svg.viewBox.baseVal.height;
    const top = Math.max(1, ...values);
    const step = values.length > 1 ? width / (values.length - 1) : width;
    const points = values.map((v, i) => `${(i * step).toFixed(1)},${(height - 1 - (v / top) * (height - 2)).toFixed(1)}`);
    let line = svg.querySelector("polyline");
    if (!line) {
      line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
      svg.appendChild(line);
    }
    line.setAttribute("points", points.join(" "));
    document.getElementById(`${id}-now`).textContent = values.length ? String(values[values.length - 1]) : "";
  }

  function draw() {
    const now = Math.floor(Date.now() / 1000);
    const rates = [];
    for (let s = now - SECONDS; s < now; s += 1) rates.push(perSecond.get(s) || 0);
    for (const s of perSecond.keys()) if (s < now - SECONDS) perSecond.delete(s);
    spark("throughput", rates);
    spark("latency", latencies.slice());
  }

  function receive(kind) {
    return (message) => {
      const item = JSON.parse(message.data);
      count(item);
      if (paused) {
        held.push([kind, item]);
        state.textContent = `paused (${held.length} held)`;
      } else show(kind, item);
    };
  }

  pauseButton.addEventListener("click", () => {
    paused = !paused;
    pauseButton.textContent = paused ? "Resume" : "Pause";
    if (!paused) {
      held.forEach(([kind, item]) => show(kind, item));
      held = [];
    }
    state.textContent = paused ? `paused (${held.length} held)` : "live";
  });

  const filters = new URLSearchParams(window.location.search);
  const source = new EventSource(`${flow.dataset.stream}?${filters.toString()}`);
  source.addEventListener("decision", receive("decision"));
  source.addEventListener("rejection", receive("rejection"));
  // An event shown before its copies were all acknowledged: its latency, later.
  source.addEventListener("completed", (message) => latency(JSON.parse(message.data).latency_ms));
  source.addEventListener("open", () => {
    state.textContent = paused ? `paused (${held.length} held)` : "live";
  });
  source.addEventListener("error", () => { state.textContent = "reconnecting…"; });
  setInterval(draw, 1000);
  draw();
})();
