// Small DOM helpers shared by the page's parts: lookups, elements, messages.

export const $ = (selector, root = document) => root.querySelector(selector);

/** An element with a class and text (always textContent, never HTML). */
export function el(tag, { className = "", text, attrs = {} } = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

/** Show a message to the writer: an error (ApiError or Error) or a plain sentence. */
export function notify(what, { kind = "error" } = {}) {
  const text = typeof what === "string" ? what : what.describe ? what.describe() : what.message;
  const box = $("#notice");
  box.dataset.kind = kind;
  $("#notice-text").textContent = text;
  box.hidden = false;
}

export function clearNotice() {
  $("#notice").hidden = true;
  $("#notice-text").textContent = "";
}

/** Mark `node` with the language of a project so fonts and screen readers fit the text. */
export function setLanguage(node, language) {
  if (language) node.setAttribute("lang", language);
  else node.removeAttribute("lang");
}

/** Disable a form's controls while `work` runs, so a double click sends once. */
export async function busy(form, work) {
  const controls = [...form.querySelectorAll("button, input, select, textarea")];
  const before = controls.map((control) => control.disabled);
  controls.forEach((control) => (control.disabled = true));
  form.setAttribute("aria-busy", "true");
  try {
    return await work();
  } finally {
    controls.forEach((control, index) => (control.disabled = before[index]));
    form.removeAttribute("aria-busy");
  }
}

export const STAGES = {
  STAGE_PLAN: "Planning the beats",
  STAGE_WRITE: "Writing the script",
  STAGE_REVIEW: "Reviewing the script",
  STAGE_SAVE: "Saving the episode",
  STAGE_INDEX: "Adding the episode to the story knowledge",
};

export const PROJECT_TYPES = {
  PROJECT_TYPE_DRAMA: "Drama",
  PROJECT_TYPE_COMEDY: "Comedy",
  PROJECT_TYPE_ROMANCE: "Romance",
  PROJECT_TYPE_THRILLER: "Thriller",
  PROJECT_TYPE_DOCUMENTARY: "Documentary",
  PROJECT_TYPE_WEB_SERIES: "Web series",
  PROJECT_TYPE_SHORT_FILM: "Short film",
  PROJECT_TYPE_ADVERTISEMENT: "Advertisement",
  PROJECT_TYPE_EDUCATION: "Education",
};

export const KNOWLEDGE_KINDS = {
  KNOWLEDGE_KIND_STORY_BIBLE: "Story bible",
  KNOWLEDGE_KIND_CHARACTER_PROFILE: "Character profile",
  KNOWLEDGE_KIND_WORLD_BUILDING: "World building",
  KNOWLEDGE_KIND_PLOT_OUTLINE: "Plot outline",
  KNOWLEDGE_KIND_DIALOGUE_SAMPLE: "Dialogue sample",
  KNOWLEDGE_KIND_STYLE_GUIDE: "Style guide",
  KNOWLEDGE_KIND_RESEARCH_NOTE: "Research note",
};
