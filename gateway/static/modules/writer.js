// Writing an episode: start a job, follow it live as a screenplay, cancel it.

import { call } from "./api.js";
import { loadEpisodes, readEpisode } from "./episodes.js";
import { GenerationFollower } from "./follow.js";
import { currentProject, forgetIfGone, onProjectChosen, refreshCurrent, updateCurrent } from "./projects.js";
import { Screenplay } from "./screenplay.js";
import { $, busy, clearNotice, el, notify, setLanguage, STAGES } from "./ui.js";

const CONNECTION_TEXT = {
  reconnecting: "Connection lost. Reconnecting… the script continues where it stopped.",
  retrying: "Cannot reach the server. Trying again…",
  offline: "You are offline. The script continues when the connection is back.",
};

let screenplay = null;
let source = null; // the Fountain text node of the "Fountain source" view
let follower = null;
let generation = null;

function connection(state, error) {
  const banner = $("#connection");
  const live = $("#live");
  live.dataset.connection = state;
  if (state === "open") {
    if (!banner.hidden) banner.textContent = "Connected again.";
    setTimeout(() => {
      if (live.dataset.connection === "open") banner.hidden = true;
    }, 1500);
    return;
  }
  banner.textContent = error && error.status === 429 ? error.describe() : CONNECTION_TEXT[state] || "";
  banner.hidden = false;
}

function streamNotice(text) {
  $("#stream-notices").append(el("li", { text }));
}

function onEvent(kind, event) {
  if (kind === "queued") {
    const queued = event.queued || {};
    $("#stage").textContent = "Queued";
    if (queued.notice) streamNotice(queued.notice);
  } else if (kind === "stage") {
    const started = event.stageStarted || {};
    const by = started.provider ? ` (${started.provider}${started.model ? ` · ${started.model}` : ""})` : "";
    $("#stage").textContent = `${STAGES[started.stage] || started.stage}${by}`;
    $("#progress").value = 0;
  } else if (kind === "progress") {
    const progress = event.progress || {};
    $("#progress").value = Number(progress.fraction || 0);
    if (progress.message) $("#progress").title = progress.message;
  } else if (kind === "failover") {
    const switched = event.providerSwitched || {};
    const why = switched.reason ? `: ${switched.reason}` : "";
    streamNotice(`Switched from ${switched.fromProvider} to ${switched.toProvider}${why}. The script continues.`);
  }
}

function onText(text) {
  screenplay.append(text);
  source.appendData(text);
  $("#live").dataset.length = String(Number($("#live").dataset.length || 0) + Array.from(text).length);
}

async function onEnd(kind, event) {
  $("#cancel").disabled = true;
  $("#write").disabled = false;
  screenplay.end();
  $("#script").setAttribute("aria-busy", "false");
  $("#live").dataset.state = kind;
  $("#connection").hidden = true;
  $("#progress").value = kind === "completed" ? 1 : $("#progress").value;
  if (kind === "completed") {
    const episode = (event.completed || {}).episode || {};
    if (episode.script !== undefined && episode.script !== screenplay.text) {
      // Only if text went missing on the way: show the saved script, and say so.
      $("#live").dataset.corrected = "true";
      screenplay.show(episode.script);
      source.data = episode.script;
    }
    $("#stage").textContent = `Done: saved as episode ${episode.number || ""}.`.replace(" .", ".");
    const quality = (event.completed || {}).quality || {};
    for (const warning of quality.warnings || []) streamNotice(`Review: ${warning}`);
    await refreshCurrent().catch(notify);
    await loadEpisodes().catch(notify);
    if (episode.name) {
      const read = el("button", { text: "Read the saved episode", attrs: { type: "button" } });
      read.addEventListener("click", () => readEpisode(episode.name));
      const item = el("li");
      item.append(read);
      $("#stream-notices").append(item);
    }
  } else if (kind === "cancelled") {
    $("#stage").textContent = "Cancelled. Nothing was saved.";
  } else {
    const status = (event.failed || {}).status || {};
    $("#stage").textContent = "The episode could not be written.";
    notify(`Writing failed: ${status.message || "unknown error"}`);
  }
}

function optionsOf(form) {
  const headers = {};
  const provider = form.elements.provider.value;
  if (provider) headers["x-preferred-provider"] = provider;
  const flags = [...form.querySelectorAll("input[name=flags]:checked")].map((box) => box.value);
  if (flags.length) headers["x-feature-flags"] = flags.join(",");
  return headers;
}

async function start(form) {
  const project = currentProject();
  const minutes = form.elements.minutes.value.trim();
  if (minutes !== "" && Number(minutes) !== Number(project.targetEpisodeMinutes || 0)) {
    // The target length is a project setting the writer reads and writes from here.
    await updateCurrent({ targetEpisodeMinutes: Number(minutes) });
  }
  const started = await call(
    "POST",
    `/v1/${project.name}/generations`,
    { title: form.elements.title.value.trim(), description: form.elements.description.value.trim(), detach: true },
    optionsOf(form),
  );
  return started;
}

function resetLive(project) {
  if (follower) follower.close();
  screenplay.reset();
  source.data = "";
  const live = $("#live");
  live.hidden = false;
  live.dataset.state = "running";
  live.dataset.length = "0";
  delete live.dataset.corrected;
  delete live.dataset.connection;
  setLanguage(live, project.language);
  $("#stage").textContent = "Starting…";
  $("#progress").value = 0;
  $("#stream-notices").replaceChildren();
  $("#script").setAttribute("aria-busy", "true");
}

export function setUpWriter() {
  screenplay = new Screenplay($("#script"));
  source = document.createTextNode("");
  $("#script-source").append(source);
  const form = $("#new-episode");

  form.addEventListener("submit", async (submit) => {
    submit.preventDefault();
    const project = currentProject();
    let started;
    try {
      started = await busy(form, () => start(form));
    } catch (error) {
      forgetIfGone(error);
      return;
    }
    clearNotice();
    resetLive(project);
    generation = started.generation.name;
    $("#live").dataset.generation = generation;
    $("#write").disabled = true;
    $("#cancel").disabled = false;
    follower = new GenerationFollower(generation, started.eventsUrl, { onEvent, onText, onConnection: connection, onEnd });
    follower.start();
  });

  $("#cancel").addEventListener("click", async () => {
    if (!generation) return;
    $("#cancel").disabled = true;
    try {
      const job = generation;
      $("#stage").textContent = "Cancelling…";
      await call("POST", `/v1/${job}:cancel`, {});
    } catch (error) {
      $("#cancel").disabled = false;
      notify(error);
    }
  });

  onProjectChosen((project) => {
    if (follower) follower.close();
    follower = null;
    generation = null;
    $("#live").hidden = true;
    $("#write").disabled = false;
    $("#cancel").disabled = true;
    form.reset();
    if (project) {
      const minutes = Number(project.targetEpisodeMinutes || 0);
      form.elements.minutes.value = minutes ? String(minutes) : "";
      setLanguage(form.elements.title, project.language);
      setLanguage(form.elements.description, project.language);
    }
  });
}
