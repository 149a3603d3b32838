// datakit annotate: the operator's page (reads /api/operator every 5 s).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const pct = (x) => (x === null || x === undefined) ? "-" : (100 * x).toFixed(0) + "%";

  function table(id, columns, rows, rowClass, extra) {
    const t = $(id);
    t.innerHTML = "";
    const head = t.insertRow();
    for (const [, label] of columns) { const th = document.createElement("th"); th.textContent = label; head.appendChild(th); }
    if (extra) { head.appendChild(document.createElement("th")); }
    for (const r of rows) {
      const tr = t.insertRow();
      if (rowClass) { tr.className = rowClass(r); }
      for (const [k, , fmt] of columns) { tr.insertCell().textContent = fmt ? fmt(r[k], r) : (r[k] === null ? "-" : String(r[k])); }
      if (extra) { const td = tr.insertCell(); const el = extra(r); if (el) { td.appendChild(el); } }
    }
  }

  async function unpause(worker) {
    const resp = await fetch("/api/operator/unpause", {
      method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ worker: worker }),
    });
    if (!resp.ok) { $("error").textContent = (await resp.json()).error; }
    refresh();
  }

  async function refresh() {
    let r;
    try {
      const resp = await fetch("/api/operator", { credentials: "same-origin" });
      r = await resp.json();
      if (!resp.ok) { $("error").textContent = r.error; return; }
    } catch (e) { $("error").textContent = String(e); return; }
    $("error").textContent = "";
    const t = r.totals;
    $("summary").textContent = r.mode + " mode: " + t.tasks + " tasks, " + t.votes + " votes from " + t.workers +
      " workers; " + t.tasks_without_votes + " tasks without votes; " + t.paused_workers + " paused workers, " +
      t.flagged_votes + " flagged votes.";
    $("pause-rule").textContent = r.pause_below === null ? "No automatic pauses." :
      "Paused automatically below " + pct(r.pause_below) + " on check items, after " + r.min_gold + " of them.";
    table("workers", [["worker", "worker"], ["votes", "votes"], ["tasks", "tasks"],
      ["gold_accuracy", "check items right", (v, w) => w.gold_total ? pct(v) + " (" + w.gold_correct + "/" + w.gold_total + ")" : "-"],
      ["agreement", "agreement", (v, w) => w.agreement_votes ? pct(v) + " of " + w.agreement_votes : "-"],
      ["working_on", "working on"], ["paused", "paused"], ["flagged_votes", "flagged votes"],
      ["revoked", "invitation", (v, w) => w.invited ? (v ? "revoked" : "active") : "-"]],
      r.workers, (w) => w.paused ? "paused" : "",
      (w) => { if (!w.paused) { return null; } const b = document.createElement("button"); b.textContent = "unpause";
               b.addEventListener("click", () => unpause(w.worker)); return b; });
    table("rounds", [["round", "round"], ["tasks", "tasks"], ["tasks_with_votes", "with votes"],
      ["tasks_without_votes", "without votes"], ["workers_per_task", "workers per task"], ["votes", "votes"]], r.rounds);
    $("consensus-note").textContent = r.consensus.note || "";
    table("consensus", [["question", "question"], ["images", "images"], ["votes", "votes"], ["accepted", "accepted"],
      ["rejected", "rejected"], ["open", "open"], ["more_votes", "more votes needed"]], r.consensus.questions);
    table("tasks", [["task", "task"], ["round", "round"], ["question", "question"], ["items", "items"],
      ["n_gold", "gold"], ["workers", "workers"], ["in_progress", "in progress"], ["votes", "votes"]], r.tasks);
  }

  refresh();
  setInterval(refresh, 5000);
})();
