// Projects: the list, create, edit and delete; the chosen project is the page's context.

import { call, listAll } from "./api.js";
import { $, busy, clearNotice, el, notify, PROJECT_TYPES, setLanguage } from "./ui.js";

const NUMBER_FIELDS = new Set(["targetEpisodeMinutes"]);
const listeners = [];
let projects = [];
let current = null;

export const currentProject = () => current;

/** Run `listener(project)` whenever another project (or none) is chosen. */
export function onProjectChosen(listener) {
  listeners.push(listener);
}

/** Fill `form` with the shared project fields; ids get `prefix` so labels stay unique. */
function buildForm(form, prefix, submitLabel) {
  form.append($("#project-fields").content.cloneNode(true));
  for (const label of form.querySelectorAll("label[data-for]")) {
    label.htmlFor = `${prefix}-${label.dataset.for}`;
  }
  for (const control of form.querySelectorAll("[data-id]")) control.id = `${prefix}-${control.dataset.id}`;
  $("button[type=submit]", form).textContent = submitLabel;
}

function fieldsOf(form) {
  const fields = {};
  for (const control of form.querySelectorAll("[name]")) {
    const value = control.value.trim();
    if (NUMBER_FIELDS.has(control.name)) fields[control.name] = value === "" ? 0 : Number(value);
    else fields[control.name] = value;
  }
  return fields;
}

function fillForm(form, project) {
  for (const control of form.querySelectorAll("[name]")) {
    const value = project[control.name];
    control.value = value === undefined || value === null ? "" : String(value);
    if (NUMBER_FIELDS.has(control.name) && Number(value) === 0) control.value = "";
  }
}

function summary(project) {
  const parts = [PROJECT_TYPES[project.type] || "", project.language || ""];
  const minutes = Number(project.targetEpisodeMinutes || 0);
  if (minutes) parts.push(`${minutes} min episodes`);
  const episodes = Number(project.episodeCount || 0);
  parts.push(`${episodes} episode${episodes === 1 ? "" : "s"}`);
  if (project.logline) parts.push(project.logline);
  return parts.filter(Boolean).join(" · ");
}

function renderList() {
  const list = $("#project-list");
  list.replaceChildren();
  $("#projects-empty").hidden = projects.length > 0;
  for (const project of projects) {
    const button = el("button", { className: "project-link", attrs: { type: "button" } });
    const title = el("span", { className: "project-name", text: project.title });
    setLanguage(title, project.language);
    button.append(title, el("span", { className: "hint", text: ` ${project.episodeCount || 0} ep.` }));
    if (current && current.name === project.name) button.setAttribute("aria-current", "true");
    button.addEventListener("click", () => choose(project, { focus: true }));
    const item = el("li");
    item.append(button);
    list.append(item);
  }
}

function showProject() {
  $("#welcome").hidden = current !== null;
  $("#project-view").hidden = current === null;
  if (!current) return;
  setLanguage($("#project-title"), current.language);
  $("#project-title").textContent = current.title;
  $("#project-summary").textContent = summary(current);
  fillForm($("#edit-project"), current);
}

/** Make `project` the current one; with `focus`, move keyboard focus to it. */
export function choose(project, { focus = false } = {}) {
  const changed = !current || !project || current.name !== project.name;
  current = project;
  // The address names the open project, so a reload (or a shared link) comes back to it.
  history.replaceState(null, "", project ? `#${project.name}` : location.pathname);
  renderList();
  showProject();
  if (changed) for (const listener of listeners) listener(current);
  if (focus) $("#workspace").focus();
}

export async function loadProjects() {
  projects = await listAll("/v1/projects", "projects");
  const wanted = current ? current.name : decodeURIComponent(location.hash.slice(1));
  const found = projects.find((project) => project.name === wanted) || null;
  if (found && !current) {
    choose(found);
    return;
  }
  if (current && !found) {
    choose(null);
    return;
  }
  current = found;
  renderList();
  showProject();
}

/** Forget every project on screen (on sign-out): the next key may be another tenant's. */
export function forgetProjects() {
  projects = [];
  choose(null);
}

/** After a 404 on the open project: it is gone, so refresh the list and say so. */
export function forgetIfGone(error) {
  notify(error);
  if (error.status === 404) loadProjects().catch(notify);
}

/** Refresh the current project (e.g. its episode count after a new episode). */
export async function refreshCurrent() {
  if (!current) return;
  const fresh = await call("GET", `/v1/${current.name}`);
  projects = projects.map((project) => (project.name === fresh.name ? fresh : project));
  current = fresh;
  renderList();
  showProject();
}

/** Save a changed field of the current project (e.g. the target length). */
export async function updateCurrent(fields) {
  const updated = await call("PATCH", `/v1/${current.name}`, fields);
  projects = projects.map((project) => (project.name === updated.name ? updated : project));
  current = updated;
  renderList();
  showProject();
  return updated;
}

export function setUpProjects() {
  const create = $("#new-project");
  buildForm(create, "new-project", "Create project");
  $("#new-project-status").closest("form").querySelector("[data-for=status]").hidden = true;
  $("#new-project-status").hidden = true;
  buildForm($("#edit-project"), "edit-project", "Save changes");

  create.addEventListener("submit", async (submit) => {
    submit.preventDefault();
    const fields = fieldsOf(create);
    delete fields.status;
    for (const [name, value] of Object.entries(fields)) if (value === "" || value === 0) delete fields[name];
    try {
      const project = await busy(create, () => call("POST", "/v1/projects", fields));
      clearNotice();
      create.reset();
      $("#new-project-box").open = false;
      projects = [project, ...projects];
      choose(project, { focus: true });
    } catch (error) {
      notify(error);
    }
  });

  const edit = $("#edit-project");
  edit.addEventListener("submit", async (submit) => {
    submit.preventDefault();
    const fields = fieldsOf(edit);
    const changed = {};
    for (const [name, value] of Object.entries(fields)) {
      const before = current[name] === undefined ? (NUMBER_FIELDS.has(name) ? 0 : "") : current[name];
      if (value !== before) changed[name] = value;
    }
    if (Object.keys(changed).length === 0) {
      notify("Nothing changed.", { kind: "info" });
      return;
    }
    try {
      await busy(edit, () => updateCurrent(changed));
      $("#edit-project-box").open = false;
      notify("Project saved.", { kind: "info" });
    } catch (error) {
      forgetIfGone(error);
    }
  });

  $("#delete-project").addEventListener("click", async () => {
    const project = current;
    const episodes = Number(project.episodeCount || 0);
    const question = episodes
      ? `Delete “${project.title}” and its ${episodes} episodes? This cannot be undone.`
      : `Delete “${project.title}”? This cannot be undone.`;
    if (!window.confirm(question)) return;
    try {
      await call("DELETE", `/v1/${project.name}${episodes ? "?force=true" : ""}`);
      projects = projects.filter((item) => item.name !== project.name);
      choose(null);
      notify(`Deleted “${project.title}”.`, { kind: "info" });
      $("#project-list button")?.focus();
    } catch (error) {
      notify(error);
    }
  });
}
