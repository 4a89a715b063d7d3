// The gateway's page: list and create projects, write an episode and watch it
// arrive through EventSource. Text goes in with textContent only, never as HTML.

const $ = (selector) => document.querySelector(selector);
let project = null;
let generation = null;
let events = null;

async function call(method, url, body) {
  const response = await fetch(url, {
    method,
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const reply = await response.json();
  if (!response.ok) throw new Error(reply.error ? reply.error.message : response.statusText);
  return reply;
}

function say(text) {
  $("#status").textContent = text;
}

async function loadProjects() {
  const reply = await call("GET", "/v1/projects?pageSize=100");
  const list = $("#projects");
  list.replaceChildren();
  for (const item of reply.projects || []) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = `${item.title} (${item.language}, ${item.episodeCount} episodes)`;
    button.setAttribute("aria-current", String(project !== null && item.name === project.name));
    button.addEventListener("click", () => choose(item));
    const entry = document.createElement("li");
    entry.append(button);
    list.append(entry);
  }
}

function choose(item) {
  project = item;
  $("#selected").textContent = `for “${item.title}”`;
  $("#new-episode button[type=submit]").disabled = false;
  loadProjects().catch((error) => say(error.message));
}

function follow(eventsUrl) {
  if (events) events.close();
  $("#script").textContent = "";
  $("#cancel").disabled = false;
  events = new EventSource(eventsUrl);
  const done = (label) => (message) => {
    const event = JSON.parse(message.data);
    $("#stage").textContent = label(event);
    $("#cancel").disabled = true;
    events.close();
    loadProjects().catch((error) => say(error.message));
  };
  events.addEventListener("queued", (message) => {
    const event = JSON.parse(message.data);
    $("#stage").textContent = event.queued.notice || "Queued";
  });
  events.addEventListener("stage", (message) => {
    $("#stage").textContent = JSON.parse(message.data).stageStarted.stage;
  });
  events.addEventListener("delta", (message) => {
    $("#script").textContent += JSON.parse(message.data).textDelta.text;
  });
  events.addEventListener("failover", (message) => {
    const switched = JSON.parse(message.data).providerSwitched;
    $("#stage").textContent = `Continuing with ${switched.toProvider}`;
  });
  events.addEventListener("completed", done((event) => `Saved as ${event.completed.episode.name}`));
  events.addEventListener("failed", done((event) => `Failed: ${event.failed.status.message}`));
  events.addEventListener("cancelled", done((event) => `Cancelled: ${event.cancelled.reason}`));
}

$("#new-project").addEventListener("submit", async (submit) => {
  submit.preventDefault();
  const form = new FormData(submit.target);
  try {
    const created = await call("POST", "/v1/projects", {
      title: form.get("title"),
      type: form.get("type"),
      language: form.get("language"),
      logline: form.get("logline"),
    });
    submit.target.reset();
    choose(created);
  } catch (error) {
    say(error.message);
  }
});

$("#new-episode").addEventListener("submit", async (submit) => {
  submit.preventDefault();
  const form = new FormData(submit.target);
  try {
    const started = await call("POST", `/v1/${project.name}/generations`, {
      title: form.get("title"),
      description: form.get("description"),
      detach: true,
    });
    generation = started.generation.name;
    follow(started.eventsUrl);
  } catch (error) {
    say(error.message);
  }
});

$("#cancel").addEventListener("click", async () => {
  if (generation === null) return;
  try {
    await call("POST", `/v1/${generation}:cancel`);
  } catch (error) {
    say(error.message);
  }
});

loadProjects().catch((error) => say(error.message));
