// datakit annotate: the page logic, dependency-free.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  let worker = "";
  let task = null;
  let nDone = 0;

  function showError(msg) { $("error").textContent = msg || ""; }

  async function api(path, body) {
    const opts = body === undefined ? {} : {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    };
    const resp = await fetch(path, opts);
    const data = await resp.json();
    if (!resp.ok) { throw new Error(data.error || ("HTTP " + resp.status)); }
    return data;
  }

  function render(t) {
    task = t;
    $("task-id").textContent = t.task;
    $("feedback").textContent = "";
    $("next").classList.add("hidden");
    $("submit").classList.remove("hidden");
    $("submit").disabled = false;
    const grid = $("grid");
    grid.innerHTML = "";
    if (t.kind === "binary") {
      const name = t.question_name || t.question;
      $("question").textContent = "Which of these images contain a " + name + (t.gloss ? ": " + t.gloss : "") + "?";
      $("hint").textContent = "Click every image that shows it, then Submit.";
    } else {
      $("question").textContent = "Pick the class of each image.";
      $("hint").textContent = "Choose a class under every image, then Submit.";
    }
    for (const it of t.items) {
      const cell = document.createElement("div");
      cell.className = "cell";
      cell.dataset.item = it.item;
      const img = document.createElement("img");
      img.src = it.url;
      img.alt = it.item;
      cell.appendChild(img);
      if (t.kind === "binary") {
        cell.addEventListener("click", () => cell.classList.toggle("selected"));
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
        cell.appendChild(sel);
      }
      grid.appendChild(cell);
    }
  }

  async function loadNext() {
    showError("");
    try {
      const t = await api("/api/next?worker=" + encodeURIComponent(worker));
      if (t.done) {
        $("work").classList.add("hidden");
        $("done").classList.remove("hidden");
        return;
      }
      render(t);
    } catch (e) { showError(e.message); }
  }

  async function submit() {
    showError("");
    const answers = {};
    for (const cell of document.querySelectorAll("#grid .cell")) {
      if (task.kind === "binary") {
        answers[cell.dataset.item] = cell.classList.contains("selected") ? "yes" : "no";
      } else {
        const v = cell.querySelector("select").value;
        if (!v) { showError("Please choose a class for every image."); return; }
        answers[cell.dataset.item] = v;
      }
    }
    $("submit").disabled = true;
    try {
      const r = await api("/api/submit", { worker: worker, task: task.task, answers: answers });
      nDone += 1;
      $("n-done").textContent = String(nDone);
      let msg = "Saved " + r.recorded + " answers" + (r.duplicates ? " (" + r.duplicates + " already given)" : "") + ".";
      if (r.gold_total) {
        msg += " Check items: " + r.gold_correct + " of " + r.gold_total + " right.";
        for (const g of r.gold) {
          if (!g.correct) {
            const cell = document.querySelector('#grid .cell[data-item="' + g.item + '"]');
            if (cell) { cell.classList.add("wrong"); cell.title = "expected: " + g.expected; }
          }
        }
      }
      $("feedback").textContent = msg;
      $("submit").classList.add("hidden");
      $("next").classList.remove("hidden");
    } catch (e) {
      $("submit").disabled = false;
      showError(e.message);
    }
  }

  $("start").addEventListener("click", () => {
    worker = $("worker").value.trim();
    if (!worker) { showError("Please enter your name."); return; }
    $("who").textContent = worker;
    $("login").classList.add("hidden");
    $("work").classList.remove("hidden");
    loadNext();
  });
  $("submit").addEventListener("click", submit);
  $("next").addEventListener("click", loadNext);
})();
