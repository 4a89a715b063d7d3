// Story knowledge of the current project: list, add and delete documents.

import { call, listAll } from "./api.js";
import { currentProject, forgetIfGone, onProjectChosen } from "./projects.js";
import { $, busy, clearNotice, el, KNOWLEDGE_KINDS, notify, setLanguage } from "./ui.js";

const PREVIEW_CHARACTERS = 160;

function preview(text) {
  const chars = Array.from(text || "");
  return chars.length > PREVIEW_CHARACTERS ? `${chars.slice(0, PREVIEW_CHARACTERS).join("")}…` : chars.join("");
}

function render(documents, language) {
  const list = $("#knowledge-list");
  list.replaceChildren();
  $("#knowledge-empty").hidden = documents.length > 0;
  for (const document_ of documents) {
    const item = el("li", { className: "item knowledge-item" });
    const title = el("strong", { text: document_.title || "(untitled)" });
    // Lists leave the text out; the size says how much the writer will draw on.
    const size = Number(document_.characterCount || Array.from(document_.text || "").length);
    const detail = document_.text ? preview(document_.text) : `${size.toLocaleString()} characters`;
    const body = el("p", { className: "preview", text: detail });
    setLanguage(title, language);
    setLanguage(body, language);
    const remove = el("button", {
      className: "danger small",
      text: "Delete",
      attrs: { type: "button", "aria-label": `Delete document “${document_.title}”` },
    });
    remove.addEventListener("click", () => removeDocument(document_));
    // The full text is fetched when the writer opens it (lists leave it out).
    const reading = el("details", { className: "reading" });
    const text = el("p", { className: "full-text" });
    setLanguage(text, language);
    reading.append(el("summary", { text: "Read" }), text);
    reading.addEventListener("toggle", async () => {
      if (!reading.open || text.dataset.loaded) return;
      try {
        const full = await call("GET", `/v1/${document_.name}`);
        text.textContent = full.text || "";
        text.dataset.loaded = "true";
      } catch (error) {
        notify(error);
      }
    });
    const kind = el("span", { className: "tag", text: KNOWLEDGE_KINDS[document_.kind] || document_.kind || "" });
    const head = el("p", { className: "document-head" });
    head.append(kind, " ", title);
    item.append(head, body, remove, reading);
    list.append(item);
  }
}

export async function loadKnowledge() {
  const project = currentProject();
  if (!project) return;
  const documents = await listAll(`/v1/${project.name}/knowledge`, "documents", "knowledgeDocuments");
  if (currentProject() === project) render(documents, project.language);
}

async function removeDocument(document_) {
  if (!window.confirm(`Delete the document “${document_.title}”?`)) return;
  try {
    await call("DELETE", `/v1/${document_.name}`);
    notify(`Deleted “${document_.title}”.`, { kind: "info" });
    await loadKnowledge();
    $("#knowledge-heading").scrollIntoView({ block: "nearest" });
  } catch (error) {
    notify(error);
  }
}

export function setUpKnowledge() {
  const form = $("#new-knowledge");
  form.addEventListener("submit", async (submit) => {
    submit.preventDefault();
    const project = currentProject();
    const fields = Object.fromEntries(new FormData(form));
    try {
      await busy(form, () => call("POST", `/v1/${project.name}/knowledge`, fields));
      clearNotice();
      form.reset();
      await loadKnowledge();
      $("#knowledge-title").focus();
    } catch (error) {
      forgetIfGone(error);
    }
  });
  onProjectChosen((project) => {
    $("#knowledge-list").replaceChildren();
    setLanguage($("#knowledge-text"), project ? project.language : "");
    if (project) loadKnowledge().catch(notify);
  });
}
