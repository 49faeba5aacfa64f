// The joblib dashboard: one Server-Sent Events stream of snapshots, rendered without a reload.
"use strict";
(() => {
  const base = document.body.dataset.base;
  const $ = (selector) => document.querySelector(selector);
  const roomFilter = $("#room-filter");
  const statusFilter = $("#status-filter");
  const knownRooms = new Set();
  let source = null;
  let snapshot = null;
  let detailId = null;
  let detailKey = null;

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  function ago(iso) {
    if (!iso) return "–";
    const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (seconds < 60) return `${seconds.toFixed(0)} s ago`;
    if (seconds < 3600) return `${(seconds / 60).toFixed(0)} min ago`;
    return `${(seconds / 3600).toFixed(1)} h ago`;
  }

  function duration(task) {
    let seconds = task.duration_seconds;
    if (seconds === null || seconds === undefined) {
      if (!task.started_at) return "–";
      seconds = (Date.now() - Date.parse(task.started_at)) / 1000;
    }
    if (seconds < 1) return `${(seconds * 1000).toFixed(0)} ms`;
    if (seconds < 120) return `${seconds.toFixed(1)} s`;
    return `${(seconds / 60).toFixed(1)} min`;
  }

  function progressOf(task) {
    if (typeof task.progress === "number") return Math.min(1, Math.max(0, task.progress));
    if (task.status === "completed") return 1;
    return null;
  }

  function statusPill(status) {
    return el("span", { class: "pill", "data-status": status, text: status });
  }

  function renderSummary(data) {
    const live = data.workers.filter((w) => w.live).length;
    const sum = (key) => data.jobs.reduce((total, job) => total + job[key], 0);
    const cards = [
      ["workers live", `${live} / ${data.workers.length}`],
      ["pending", sum("pending")],
      ["claimed", sum("claimed")],
      ["running", sum("running")],
      ["providers", data.providers.length],
    ];
    $("#summary").replaceChildren(
      ...cards.map(([label, value]) =>
        el("div", { class: "card", "data-card": label }, el("b", { text: String(value) }), label),
      ),
    );
  }

  function renderTasks(data) {
    const rows = data.tasks.map((task) => {
      const progress = progressOf(task);
      const bar = el("span", { class: "bar", "data-status": task.status });
      bar.append(el("span", { style: `width: ${((progress ?? 0) * 100).toFixed(1)}%` }));
      const progressCell = el("td", {
        class: "wide",
        "data-progress": progress === null ? "" : progress.toFixed(3),
      }, bar);
      if (task.progress_message) progressCell.append(" ", el("span", { class: "muted", text: task.progress_message }));
      const outcome = task.error
        ? el("span", { class: "error", text: task.error })
        : el("code", { text: task.result === null || task.result === undefined ? "" : String(task.result) });
      return el(
        "tr",
        { "data-task-id": task.id, "data-status": task.status },
        el("td", {}, statusPill(task.status)),
        el("td", { class: "mono", text: task.job_name }),
        el("td", { text: task.room_id }),
        progressCell,
        el("td", { "data-duration": "", text: duration(task) }),
        el("td", { class: "hide-narrow muted", text: ago(task.created_at) }),
        el("td", { class: "text" }, outcome),
      );
    });
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "7", class: "empty", text: "No tasks" })));
    $("#tasks tbody").replaceChildren(...rows);
  }

  function renderJobs(data) {
    const byRoom = new Map();
    for (const job of data.jobs) {
      if (!byRoom.has(job.room_id)) byRoom.set(job.room_id, []);
      byRoom.get(job.room_id).push(job);
    }
    const blocks = [...byRoom.entries()].sort().map(([room, jobs]) =>
      el(
        "div",
        { class: "room", "data-room": room },
        el("h3", { text: room }),
        el(
          "table",
          {},
          el("thead", {}, el("tr", {}, ...["Job", "Pending", "Claimed", "Running", "Workers"].map((h) => el("th", { text: h })))),
          el(
            "tbody",
            {},
            ...jobs.map((job) =>
              el(
                "tr",
                { "data-job": job.full_name },
                el("td", { class: "mono", text: `${job.category}:${job.name}` }),
                el("td", { "data-count": "pending", text: String(job.pending) }),
                el("td", { "data-count": "claimed", text: String(job.claimed) }),
                el("td", { "data-count": "running", text: String(job.running) }),
                el("td", { text: String(job.workers.length) }),
              ),
            ),
          ),
        ),
      ),
    );
    if (!blocks.length) blocks.push(el("div", { class: "empty", text: "No jobs" }));
    $("#jobs").replaceChildren(...blocks);
  }

  function renderWorkers(data) {
    const rows = data.workers.map((worker) =>
      el(
        "tr",
        { "data-worker-id": worker.id },
        el("td", { class: "mono", text: worker.id.slice(0, 8) }),
        el("td", { text: worker.owner }),
        el(
          "td",
          {},
          el("span", { class: "pill", "data-live": String(worker.live), text: worker.live ? "live" : "stale" }),
          " ",
          el("span", { class: "muted", text: ago(worker.last_heartbeat) }),
        ),
        el("td", { class: "text mono", text: worker.jobs.join(", ") || "–" }),
      ),
    );
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "4", class: "empty", text: "No workers" })));
    $("#workers tbody").replaceChildren(...rows);
  }

  function renderProviders(data) {
    const rows = data.providers.map((p) =>
      el(
        "tr",
        { "data-provider": p.full_name },
        el("td", { class: "mono", text: `${p.category}:${p.name}` }),
        el("td", { text: p.room_id }),
        el("td", { text: p.content_type }),
        el("td", { class: "mono", text: p.worker_id.slice(0, 8) }),
      ),
    );
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "4", class: "empty", text: "No providers" })));
    $("#providers tbody").replaceChildren(...rows);
  }

  function renderRooms(data) {
    for (const room of data.rooms) knownRooms.add(room);
    const selected = roomFilter.value;
    const options = [el("option", { value: "", text: "all rooms" })];
    for (const room of [...knownRooms].sort()) options.push(el("option", { value: room, text: room }));
    roomFilter.replaceChildren(...options);
    roomFilter.value = selected;
  }

  function render(data) {
    snapshot = data;
    $("#principal").textContent = `${data.principal.id}${data.principal.is_superuser ? " (superuser)" : ""}`;
    renderRooms(data);
    renderSummary(data);
    renderTasks(data);
    renderJobs(data);
    renderWorkers(data);
    renderProviders(data);
    if (detailId) {
      const task = data.tasks.find((t) => t.id === detailId);
      const key = task ? JSON.stringify(task) : null;
      if (key !== detailKey) showDetail(detailId);
    }
  }

  async function showDetail(taskId) {
    detailId = taskId;
    const task = snapshot && snapshot.tasks.find((t) => t.id === taskId);
    detailKey = task ? JSON.stringify(task) : null;
    const response = await fetch(`${base}/api/tasks/${encodeURIComponent(taskId)}`, { credentials: "same-origin" });
    const body = await response.json();
    if (detailId !== taskId) return;
    const fields = $("#detail-fields");
    if (!response.ok) {
      fields.replaceChildren(el("dt", { text: "error" }), el("dd", { class: "error", text: body.detail || response.statusText }));
    } else {
      const shown = ["id", "status", "job_name", "room_id", "worker_id", "created_at", "started_at",
        "completed_at", "queue_position", "progress", "progress_message", "error"];
      const items = [];
      for (const key of shown) {
        if (!(key in body)) continue;
        items.push(el("dt", { text: key }), el("dd", { "data-field": key, text: body[key] === null ? "–" : String(body[key]) }));
      }
      items.push(el("dt", { text: "duration" }), el("dd", { text: duration(body) }));
      fields.replaceChildren(...items);
      $("#detail-payload").textContent = JSON.stringify(body.payload, null, 2);
      $("#detail-result").textContent = "result" in body ? JSON.stringify(body.result, null, 2) : "–";
    }
    $("#detail").hidden = false;
  }

  function connect() {
    if (source) source.close();
    const params = new URLSearchParams();
    if (roomFilter.value) params.set("room", roomFilter.value);
    if (statusFilter.value) params.set("status", statusFilter.value);
    source = new EventSource(`${base}/api/events?${params}`, { withCredentials: true });
    const state = $("#connection");
    source.addEventListener("open", () => { state.dataset.state = "live"; state.textContent = "live"; });
    source.addEventListener("error", () => { state.dataset.state = "offline"; state.textContent = "reconnecting"; });
    source.addEventListener("snapshot", (event) => render(JSON.parse(event.data)));
  }

  $("#tasks tbody").addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-task-id]");
    if (row) showDetail(row.dataset.taskId);
  });
  $("#detail-close").addEventListener("click", () => { detailId = null; $("#detail").hidden = true; });
  roomFilter.addEventListener("change", connect);
  statusFilter.addEventListener("change", connect);
  // Durations of running tasks and heartbeat ages move with the clock between snapshots.
  setInterval(() => { if (snapshot) { renderTasks(snapshot); renderWorkers(snapshot); } }, 1000);
  connect();
})();
