// The gateway's web page: sign in, projects, story knowledge, live episode writing and
// the episode reader. Plain JavaScript modules, no build step; text is only ever set
// with textContent, never as HTML. Each part lives in its own module under /modules/.

import { apiKey, onUnauthorized } from "/modules/api.js";
import { setUpEpisodes } from "/modules/episodes.js";
import { setUpKnowledge } from "/modules/knowledge.js";
import { forgetProjects, loadProjects, setUpProjects } from "/modules/projects.js";
import { $, clearNotice, notify } from "/modules/ui.js";
import { setUpWriter } from "/modules/writer.js";

function showAccount() {
  const signedIn = apiKey.get() !== "";
  $("#account-state").textContent = signedIn ? "Signed in with an API key" : "Not signed in";
  $("#sign-in-open").hidden = signedIn;
  $("#sign-out").hidden = !signedIn;
}

function openSignIn(reason) {
  $("#sign-in-reason").textContent =
    reason || "Enter your Scriptgen API key. It is kept in this browser tab only.";
  $("#sign-in").hidden = false;
  $("#api-key").focus();
}

function closeSignIn() {
  $("#sign-in").hidden = true;
  $("#sign-in-form").reset();
}

function setUpAccount() {
  $("#sign-in-open").addEventListener("click", () => openSignIn());
  $("#sign-in-cancel").addEventListener("click", () => {
    closeSignIn();
    $("#sign-in-open").focus();
  });
  $("#sign-out").addEventListener("click", () => {
    apiKey.set("");
    // Nothing of this tenant stays on screen: list, open project, live stream, reader.
    forgetProjects();
    showAccount();
    notify("Signed out. Your API key was removed from this tab.", { kind: "info" });
  });
  $("#sign-in-form").addEventListener("submit", async (submit) => {
    submit.preventDefault();
    apiKey.set($("#api-key").value.trim());
    closeSignIn();
    showAccount();
    clearNotice();
    try {
      await loadProjects();
      $("#project-list button, #new-project-box summary").focus();
    } catch (error) {
      notify(error);
    }
  });
  onUnauthorized(() => {
    const reason = apiKey.get()
      ? "The server did not accept this API key. Enter a valid key to continue."
      : "This server needs an API key. Enter yours to continue.";
    openSignIn(reason);
  });
  showAccount();
}

function setUpConnectionNotices() {
  const banner = $("#connection");
  window.addEventListener("offline", () => {
    banner.textContent = "You are offline. Changes cannot be saved until the connection is back.";
    banner.hidden = false;
  });
  window.addEventListener("online", () => {
    banner.textContent = "Back online.";
    setTimeout(() => {
      if (banner.textContent === "Back online.") banner.hidden = true;
    }, 2000);
  });
  $("#notice-close").addEventListener("click", clearNotice);
}

setUpAccount();
setUpConnectionNotices();
setUpProjects();
setUpKnowledge();
setUpEpisodes();
setUpWriter();
loadProjects()
  .catch((error) => {
    if (error.status !== 401) notify(error);
  })
  .finally(() => document.body.setAttribute("data-ready", "true"));
