/* turngym report: the episode viewer.
   data/index.js lists the episodes (window.TURNGYM_REPORT); each episode's turns load when it is
   picked from data/episodes/<id>.js, which calls turngymEpisode(id, episode): a script tag is the
   one way to load local data on file://. Every text goes in through textContent, never innerHTML. */
"use strict";
(function () {
  const report = window.TURNGYM_REPORT;
  const $ = (id) => document.getElementById(id);
  const selects = { run: $("run-select"), agent: $("agent-select"), entry: $("entry-select"),
                    outcome: $("outcome-select"), episode: $("episode-select") };
  const byId = new Map(report ? report.episodes.map((e) => [e.id, e]) : []);
  const loaded = new Map();
  let requests = 0; // only the latest pick is shown, however the loads finish
  let current = null; // the episode shown: {row, episode}
  let turn = 0;

  window.turngymEpisode = function (id, episode) {
    loaded.set(id, episode);
  };

  function load(id) {
    if (loaded.has(id)) return Promise.resolve(loaded.get(id));
    return new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = "data/episodes/" + id + ".js";
      script.onload = () => {
        script.remove();
        if (loaded.has(id)) resolve(loaded.get(id));
        else reject(new Error(script.src + " holds no episode"));
      };
      script.onerror = () => {
        script.remove();
        reject(new Error("could not load " + script.src));
      };
      document.head.appendChild(script);
    });
  }

  function fmt(value) {
    if (typeof value === "number") return String(Math.round(value * 1e4) / 1e4);
    if (value === null || value === undefined) return "—";
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  function unique(values) {
    return [...new Set(values)];
  }

  function fill(select, values, labels) {
    const keep = select.value;
    select.replaceChildren(...values.map((v, i) => new Option(labels ? labels[i] : v, v)));
    if (values.includes(keep)) select.value = keep;
  }

  function matches(row, outcome) {
    if (outcome === "success") return row.success;
    if (outcome === "failure") return !row.success;
    if (outcome === "error") return row.error;
    return true;
  }

  function label(row) {
    const parts = [String(row.index).padStart(4, "0"), row.task_id || "(no task)",
                   row.success ? "success" : "failure", "score " + fmt(row.score), row.turns + " turns"];
    return (row.error ? "⚠ ERROR · " : "") + parts.join(" · ");
  }

  /* Fill each picker from the choices above it, keeping what is still valid. */
  function refreshPickers() {
    fill(selects.run, report.runs);
    $("run-picker").hidden = report.runs.length < 2;
    const inRun = report.episodes.filter((e) => e.run === selects.run.value);
    fill(selects.agent, unique(inRun.map((e) => e.agent)));
    const ofAgent = inRun.filter((e) => e.agent === selects.agent.value);
    fill(selects.entry, unique(ofAgent.map((e) => e.entry)));
    const shown = ofAgent.filter((e) => e.entry === selects.entry.value && matches(e, selects.outcome.value));
    fill(selects.episode, shown.map((e) => String(e.id)), shown.map(label));
  }

  function pickSelected() {
    const value = selects.episode.value;
    if (value === "") {
      requests += 1;
      current = null;
      $("episode").hidden = true;
      $("viewer-message").textContent = "No episode matches these choices.";
      return;
    }
    const id = Number(value);
    if (current && current.row.id === id) return;
    const request = ++requests;
    $("viewer-message").textContent = "Loading episode…";
    load(id).then((episode) => {
      if (request === requests) showEpisode(byId.get(id), episode);
    }, (error) => {
      if (request === requests) $("viewer-message").textContent = error.message;
    });
  }

  function onPickerChange() {
    refreshPickers();
    pickSelected();
  }

  function setText(id, text) {
    $(id).textContent = text;
  }

  function showEpisode(row, episode) {
    current = { row, episode };
    $("viewer-message").textContent = "";
    $("episode").hidden = false;
    const outcome = $("outcome");
    const status = episode.error ? "error" : episode.success ? "success" : "failure";
    outcome.textContent = status;
    outcome.className = "badge " + status;
    setText("episode-title", `${row.run} · ${row.agent} · ${row.entry} · episode ${row.index} · task ` +
            `${episode.task_id || "(none)"} · score ${fmt(episode.score)}`);
    setText("instruction", episode.instruction || "");

    const error = episode.error;
    $("episode-error").hidden = !error;
    if (error) {
      const where = error.turn === undefined || error.turn === null ? "" : ` (at turn ${error.turn})`;
      setText("episode-error-message", `${error.type || "Error"}: ${error.message || ""}${where}`);
      $("traceback-box").hidden = !error.traceback;
      setText("traceback", error.traceback || "");
    }

    const meta = episode.meta || {};
    const facts = [["env", episode.env_id], ["task id", episode.task_id], ["task type", meta.task_type],
                   ["split", meta.split], ["seed", episode.seed], ["env kwargs", meta.env_kwargs],
                   ["success", episode.success], ["score", episode.score], ["terminated", episode.terminated],
                   ["truncated", episode.truncated], ["turns", episode.turns.length],
                   ["seconds", meta.seconds]];
    $("episode-meta").replaceChildren(...facts.flatMap(([key, value]) => {
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = key;
      dd.textContent = fmt(value);
      return [dt, dd];
    }));
    const parts = episode.score_parts || {};
    $("score-parts-box").hidden = Object.keys(parts).length === 0;
    setText("score-parts", JSON.stringify(parts, null, 2));
    setText("final-text", episode.final_text || "");
    showTurn(0);
  }

  function showTurn(index) {
    const turns = current.episode.turns;
    const n = turns.length;
    turn = Math.max(0, Math.min(index, n - 1));
    $("no-turns").hidden = n > 0;
    $("turn").hidden = n === 0;
    setText("turn-index", n ? `turn ${turn + 1} / ${n}` : "no turns");
    $("prev-turn").disabled = turn <= 0;
    $("next-turn").disabled = turn >= n - 1;
    const slider = $("turn-slider");
    slider.max = String(Math.max(n - 1, 0));
    slider.value = String(turn);
    slider.disabled = n < 2;
    if (!n) return;

    const t = turns[turn];
    setText("obs-text", t.text);
    const image = $("obs-image");
    image.hidden = !t.image;
    if (!t.image) image.removeAttribute("src");
    else if (image.getAttribute("src") !== t.image) image.src = t.image;
    setText("action", t.action);
    setText("reward", fmt(t.reward));
    const valid = $("valid");
    valid.textContent = t.valid ? "yes" : "no";
    valid.className = t.valid ? "ok" : "bad";
    setText("error", t.error || "—");
    const tokens = Object.entries(t.tokens || {});
    $("tokens-row").hidden = tokens.length === 0;
    setText("tokens", tokens.map(([key, value]) => `${key} ${fmt(value)}`).join(" · "));
    const extras = Object.entries(t.extras || {});
    $("extras-box").hidden = extras.length === 0;
    $("extras").replaceChildren(...extras.map(([key, value]) => {
      const tr = document.createElement("tr");
      const th = document.createElement("th");
      const td = document.createElement("td");
      th.textContent = key;
      td.textContent = fmt(value);
      tr.append(th, td);
      return tr;
    }));
    const actions = t.actions || [];
    $("actions-box").hidden = actions.length === 0;
    setText("actions-summary", `admissible actions (${actions.length})`);
    setText("actions-seen", actions.join("\n"));
    setText("turn-info", JSON.stringify(t.info || {}, null, 2));
  }

  /* A results row's "episodes" link: show that run, agent and entry in the viewer. */
  function focusRow(tr) {
    for (const key of ["run", "agent", "entry"]) {
      const value = tr.dataset[key];
      refreshPickers();
      if ([...selects[key].options].some((o) => o.value === value)) selects[key].value = value;
    }
    selects.outcome.value = "all";
    onPickerChange();
  }

  if (!report || !report.episodes.length) return;
  for (const key of ["run", "agent", "entry", "outcome", "episode"]) {
    selects[key].addEventListener("change", onPickerChange);
  }
  $("obs-image").addEventListener("load", (ev) => ev.target.classList.toggle("small", ev.target.naturalWidth < 320));
  $("prev-turn").addEventListener("click", () => showTurn(turn - 1));
  $("next-turn").addEventListener("click", () => showTurn(turn + 1));
  $("turn-slider").addEventListener("input", (ev) => showTurn(Number(ev.target.value)));
  document.addEventListener("keydown", (ev) => {
    if (!current || ev.altKey || ev.ctrlKey || ev.metaKey) return;
    if (ev.target.closest && ev.target.closest("input, select, textarea")) return;
    if (ev.key === "ArrowLeft" || ev.key === "ArrowRight") {
      ev.preventDefault();
      showTurn(turn + (ev.key === "ArrowRight" ? 1 : -1));
    }
  });
  document.querySelectorAll("a.view-link").forEach((a) => {
    a.addEventListener("click", () => focusRow(a.closest("tr")));
  });
  onPickerChange();
})();
