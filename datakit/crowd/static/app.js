// datakit annotate: the worker's page, dependency-free.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  let worker = "";      // the name typed in open mode; "" with an invitation (the server knows who we are)
  let task = null;
  let phase = "idle";   // "labeling" | "submitted"

  function showError(msg) { $("error").textContent = msg || ""; }
  function show(id) {
    for (const s of ["login", "need-link", "work", "done", "paused"]) { $(s).classList.toggle("hidden", s !== id); }
  }
  function q() { return worker ? "?worker=" + encodeURIComponent(worker) : ""; }

  async function api(path, body) {
    const opts = body === undefined ? { credentials: "same-origin" } : {
      method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(worker ? Object.assign({ worker: worker }, body) : body),
    };
    const resp = await fetch(path, opts);
    let data = {};
    try { data = await resp.json(); } catch (e) { data = { error: "HTTP " + resp.status }; }
    if (!resp.ok) {
      const err = new Error(data.error || ("HTTP " + resp.status));
      err.status = resp.status; err.paused = !!data.paused;
      throw err;
    }
    return data;
  }

  function fail(e) {
    if (e.paused) { $("paused").textContent = e.message; show("paused"); return; }
    if (e.status === 401) { show("need-link"); }
    showError(e.message);
  }

  // -- saved progress: the answers of the open grid survive closing the tab --------------
  function key() { return "datakit-annotate:" + (worker || "me") + ":" + task.task; }
  function answers() {
    const out = {};
    for (const cell of document.querySelectorAll("#grid .cell")) {
      if (task.kind === "binary") {
        out[cell.dataset.item] = cell.classList.contains("selected") ? "yes" : "no";
      } else {
        out[cell.dataset.item] = cell.querySelector("select").value;
      }
    }
    return out;
  }
  function save() { try { localStorage.setItem(key(), JSON.stringify(answers())); } catch (e) { /* private mode */ } }
  function restore() {
    let saved = null;
    try { saved = JSON.parse(localStorage.getItem(key()) || "null"); } catch (e) { saved = null; }
    if (!saved) { return; }
    for (const cell of document.querySelectorAll("#grid .cell")) {
      const v = saved[cell.dataset.item];
      if (task.kind === "binary") { cell.classList.toggle("selected", v === "yes"); }
      else if (v) { cell.querySelector("select").value = v; }
    }
  }

  function toggle(cell) { cell.classList.toggle("selected"); cell.setAttribute("aria-pressed", cell.classList.contains("selected")); save(); }

  function render(t) {
    task = t;
    phase = "labeling";
    $("task-id").textContent = t.task;
    $("n-done").textContent = String(t.tasks_done || 0);
    $("feedback").textContent = "";
    $("next").classList.add("hidden");
    $("submit").classList.remove("hidden");
    $("submit").disabled = false;
    const grid = $("grid");
    grid.innerHTML = "";
    if (t.kind === "binary") {
      const name = t.question_name || t.question;
      $("question").textContent = "Which of these images contain a " + name + (t.gloss ? ": " + t.gloss : "") + "?";
      $("hint").textContent = "Click (or Space) every image that shows it, then Submit.";
    } else {
      $("question").textContent = "Pick the class of each image.";
      $("hint").textContent = "Choose a class under every image (" +
        t.choices.map((c, k) => (k + 1) + ": " + c).join(", ") + "), then Submit.";
    }
    for (const it of t.items) {
      const cell = document.createElement("div");
      cell.className = "cell";
      cell.tabIndex = 0;
      cell.dataset.item = it.item;
      cell.setAttribute("role", "button");
      const img = document.createElement("img");
      img.src = it.url;
      img.alt = it.item;
      cell.appendChild(img);
      if (t.kind === "binary") {
        cell.addEventListener("click", () => toggle(cell));
      } else {
        const sel = document.createElement("select");
        sel.className = "choice";
        const blank = document.createElement("option");
        blank.value = ""; blank.textContent = "--";
        sel.appendChild(blank);
        for (const c of t.choices) {
          const o = document.createElement("option");
          o.value = c; o.textContent = c;
          sel.appendChild(o);
        }
        sel.addEventListener("change", save);
        cell.appendChild(sel);
      }
      grid.appendChild(cell);
    }
    restore();
    const first = grid.querySelector(".cell");
    if (first) { first.focus(); }
  }

  async function refreshScore() {
    try {
      const me = await api("/api/me" + q());
      $("score").textContent = me.gold_total ? me.gold_correct + " of " + me.gold_total : "-";
      if (me.paused) { fail({ paused: true, message: "paused: " + me.paused }); return false; }
    } catch (e) { fail(e); return false; }
    return true;
  }

  async function loadNext() {
    showError("");
    try {
      const t = await api("/api/next" + q());
      if (t.done) { show("done"); return; }
      show("work");
      render(t);
    } catch (e) { fail(e); }
  }

  async function submit() {
    showError("");
    const given = answers();
    for (const v of Object.values(given)) {
      if (!v) { showError("Please choose a class for every image."); return; }
    }
    $("submit").disabled = true;
    try {
      const r = await api("/api/submit", { task: task.task, answers: given });
      try { localStorage.removeItem(key()); } catch (e) { /* ignore */ }
      phase = "submitted";
      $("n-done").textContent = String(Number($("n-done").textContent) + (r.recorded ? 1 : 0));
      let msg = "Saved " + r.recorded + " answers" + (r.duplicates ? " (" + r.duplicates + " already given)" : "") + ".";
      if (r.gold_total) {
        msg += " Check items: " + r.gold_correct + " of " + r.gold_total + " right.";
        for (const g of r.gold) {
          if (!g.correct) {
            const cell = document.querySelector('#grid .cell[data-item="' + CSS.escape(g.item) + '"]');
            if (cell) { cell.classList.add("wrong"); cell.title = "expected: " + g.expected; }
          }
        }
      }
      if (r.worker_gold_total) { $("score").textContent = r.worker_gold_correct + " of " + r.worker_gold_total; }
      if (r.paused) { msg += " You are paused: too many check items were wrong; the operator will review your work."; }
      $("feedback").textContent = msg;
      $("submit").classList.add("hidden");
      $("next").classList.remove("hidden");
      $("next").focus();
    } catch (e) {
      $("submit").disabled = false;
      fail(e);
    }
  }

  function columns() {
    const cells = document.querySelectorAll("#grid .cell");
    if (!cells.length) { return 1; }
    const top = cells[0].offsetTop;
    let n = 0;
    for (const c of cells) { if (c.offsetTop !== top) { break; } n += 1; }
    return Math.max(1, n);
  }

  document.addEventListener("keydown", (ev) => {
    if ($("work").classList.contains("hidden") || !task) { return; }
    if (ev.target && ev.target.tagName === "SELECT" && ev.key !== "Enter") { return; }
    const cells = Array.from(document.querySelectorAll("#grid .cell"));
    const at = cells.indexOf(document.activeElement);
    const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns(), ArrowUp: -columns() };
    if (ev.key === "Enter") {
      ev.preventDefault();
      if (phase === "labeling") { submit(); } else { loadNext(); }
    } else if (ev.key in moves && phase === "labeling") {
      ev.preventDefault();
      const to = Math.min(cells.length - 1, Math.max(0, (at < 0 ? 0 : at + moves[ev.key])));
      cells[to].focus();
    } else if ((ev.key === " " || ev.key === "x") && at >= 0 && phase === "labeling" && task.kind === "binary") {
      ev.preventDefault();
      toggle(cells[at]);
    } else if (/^[1-9]$/.test(ev.key) && at >= 0 && phase === "labeling" && task.kind !== "binary") {
      const c = task.choices[Number(ev.key) - 1];
      if (c) {
        ev.preventDefault();
        cells[at].querySelector("select").value = c;
        save();
        if (at + 1 < cells.length) { cells[at + 1].focus(); }
      }
    }
  });

  $("start").addEventListener("click", () => {
    worker = $("worker").value.trim();
    if (!worker) { showError("Please enter your name."); return; }
    $("who").textContent = worker;
    refreshScore().then((ok) => { if (ok) { loadNext(); } });
  });
  $("submit").addEventListener("click", submit);
  $("next").addEventListener("click", loadNext);

  // who are we? an invitation's cookie, or open mode (type a name)
  api("/api/me").then((me) => {
    if (me.mode === "open" && !me.worker) { show("login"); $("worker").focus(); return; }
    $("who").textContent = me.worker;
    $("score").textContent = me.gold_total ? me.gold_correct + " of " + me.gold_total : "-";
    if (me.paused) { fail({ paused: true, message: "paused: " + me.paused }); return; }
    loadNext();
  }).catch(fail);
})();
