// Episodes of the current project: the list, a reader laid out as a screenplay, and
// downloads. Downloads go through fetch (not a plain link) so they carry the API key.

import { call, lastId, listAll, send } from "./api.js";
import { currentProject, onProjectChosen } from "./projects.js";
import { Screenplay } from "./screenplay.js";
import { $, el, notify, setLanguage } from "./ui.js";

let reader = null;
let open = null; // the episode in the reader

function render(episodes, project) {
  const list = $("#episode-list");
  list.replaceChildren();
  $("#episodes-empty").hidden = episodes.length > 0;
  for (const episode of episodes) {
    const button = el("button", { className: "episode-link", attrs: { type: "button" } });
    const title = el("span", { text: `${episode.number}. ${episode.title}` });
    setLanguage(title, project.language);
    button.append(title);
    if (open && open.name === episode.name) button.setAttribute("aria-current", "true");
    button.addEventListener("click", () => readEpisode(episode.name));
    const item = el("li", { className: "item" });
    item.append(button);
    list.append(item);
  }
}

export async function loadEpisodes() {
  const project = currentProject();
  if (!project) return;
  const episodes = await listAll(`/v1/${project.name}/episodes`, "episodes");
  episodes.sort((a, b) => Number(b.number) - Number(a.number));
  if (currentProject() === project) render(episodes, project);
}

/** Open an episode in the reader and move focus to its title. */
export async function readEpisode(name) {
  const project = currentProject();
  try {
    const episode = await call("GET", `/v1/${name}`);
    open = episode;
    $("#reader").hidden = false;
    $("#reader").dataset.episode = episode.name;
    setLanguage($("#reader"), project ? project.language : "");
    $("#reader-title").textContent = `Episode ${episode.number}: ${episode.title}`;
    const meta = [`${episode.sceneCount || 0} scenes`, `${episode.wordCount || 0} words`];
    if (episode.cast && episode.cast.length) meta.push(`Cast: ${episode.cast.join(", ")}`);
    $("#reader-meta").textContent = meta.join(" · ");
    reader.show(episode.script || "");
    for (const button of document.querySelectorAll("#episode-list button")) {
      button.toggleAttribute("aria-current", false);
    }
    $("#reader-title").focus();
    loadEpisodes().catch(notify);
  } catch (error) {
    if (error.status === 404) loadEpisodes().catch(notify);
    notify(error);
  }
}

function filenameOf(response, fallback) {
  const disposition = response.headers.get("Content-Disposition") || "";
  const encoded = /filename\*\s*=\s*UTF-8''([^;]+)/i.exec(disposition);
  if (encoded) {
    try {
      return decodeURIComponent(encoded[1].trim());
    } catch {
      // fall through to the plain form
    }
  }
  const plain = /filename\s*=\s*"?([^";]+)"?/i.exec(disposition);
  return plain ? plain[1].trim() : fallback;
}

async function download(format) {
  if (!open) return;
  try {
    const response = await send("GET", `/v1/${open.name}:export?format=${format}`);
    const blob = await response.blob();
    const fallback = `episode-${lastId(open.name)}.${format}`;
    const link = el("a", { attrs: { href: URL.createObjectURL(blob), download: filenameOf(response, fallback) } });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60000);
  } catch (error) {
    notify(error);
  }
}

export function setUpEpisodes() {
  reader = new Screenplay($("#reader-script"));
  for (const button of document.querySelectorAll(".downloads button[data-format]")) {
    button.addEventListener("click", () => download(button.dataset.format));
  }
  onProjectChosen((project) => {
    open = null;
    $("#reader").hidden = true;
    $("#episode-list").replaceChildren();
    if (project) loadEpisodes().catch(notify);
  });
}
