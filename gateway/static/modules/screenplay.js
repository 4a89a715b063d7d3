// Lays out Fountain text as a screenplay page while it is still being written.
//
// Fountain elements are paragraphs separated by blank lines. Paragraphs that are
// complete (a blank line follows) are laid out once and never touched again; only
// the last, still-growing paragraph is laid out anew on each chunk of text, so a
// long script streams in without re-rendering what is already on the page.
// Text goes in with textContent only, never as HTML.

const SCENE_HEADING = /^(?:INT|EXT|EST|INT\.?\/EXT|I\/E)[. ]/i;
const TITLE_KEY = /^(?:Title|Credit|Author|Authors|Source|Draft date|Contact|Notes|Copyright):/i;
const BLANK_LINE = /\n[ \t]*\n/g;
const SCENE_NUMBER = /\s*#[\w.-]+#\s*$/;

function isUppercaseLine(line) {
  const name = line.replace(/\s*\(.*\)\s*$/, "").replace(/\s*\^$/, "");
  return /\p{Lu}/u.test(name) && !/\p{Ll}/u.test(name) && !/^[!~]/.test(line);
}

function isTransition(line) {
  if (line.startsWith(">") && !line.trimEnd().endsWith("<")) return true;
  return isUppercaseLine(line) && /TO:$/.test(line.trim());
}

function isCharacterCue(line) {
  if (line.startsWith("@")) return line.length > 1;
  return isUppercaseLine(line) && !SCENE_HEADING.test(line) && !isTransition(line);
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** The elements of one paragraph; `partial` when more of it may still arrive. */
function layout(block, { first, partial }) {
  const lines = block.split("\n").map((line) => line.replace(/\r$/, ""));
  while (lines.length && lines[lines.length - 1].trim() === "") lines.pop();
  if (!lines.length) return [];
  const head = lines[0].trim();

  if (first && TITLE_KEY.test(head)) return [element("div", "title-page", lines.join("\n"))];
  if (/^={3,}$/.test(head)) return [element("hr", "page-break")];
  if ((head.startsWith(".") && !head.startsWith("..")) || SCENE_HEADING.test(head)) {
    const heading = head.replace(/^\./, "").replace(SCENE_NUMBER, "");
    const rest = lines.slice(1).join("\n");
    const nodes = [element("h3", "scene-heading", heading)];
    return rest.trim() ? nodes.concat(layout(rest, { first: false, partial })) : nodes;
  }
  if (head.startsWith("#")) return [element("p", "section", head.replace(/^#+\s*/, ""))];
  if (head.startsWith("=")) return [element("p", "synopsis", head.replace(/^=\s*/, ""))];
  if (lines.length === 1 && head.startsWith(">") && head.endsWith("<")) {
    return [element("p", "centered", head.slice(1, -1).trim())];
  }
  if (lines.length === 1 && isTransition(head)) {
    return [element("p", "transition", head.replace(/^>\s*/, ""))];
  }
  // A cue needs dialogue under it; a lone capitalised line still being written may become one.
  if (isCharacterCue(head) && (lines.length > 1 || partial || head.startsWith("@"))) {
    return [dialogue(lines)];
  }
  const action = lines.map((line) => line.replace(/^!/, "")).join("\n");
  return [element("p", "action", action)];
}

function dialogue(lines) {
  const block = element("div", "dialogue-block");
  const cue = lines[0].trim().replace(/^@/, "").replace(/\s*\^$/, "");
  block.append(element("p", "character", cue));
  for (const raw of lines.slice(1)) {
    const line = raw.trim();
    if (!line) continue;
    if (line.startsWith("(") && line.endsWith(")")) block.append(element("p", "parenthetical", line));
    else if (line.startsWith("~")) block.append(element("p", "dialogue lyric", line.slice(1).trim()));
    else block.append(element("p", "dialogue", line));
  }
  return block;
}

/** A screenplay view over `container`, fed the Fountain text chunk by chunk. */
export class Screenplay {
  constructor(container) {
    this.container = container;
    this.reset();
  }

  reset() {
    this.text = "";
    this.committed = 0; // text[0, committed) is laid out for good
    this.blocks = 0;
    this.tail = [];
    this.container.replaceChildren();
  }

  /** Show `text` as the whole script. */
  show(text) {
    this.reset();
    this.append(text);
    this.end();
  }

  /** Add the next chunk of the script. */
  append(chunk) {
    this.text += chunk;
    let boundary = -1;
    let next = 0;
    BLANK_LINE.lastIndex = this.committed;
    for (let match = BLANK_LINE.exec(this.text); match; match = BLANK_LINE.exec(this.text)) {
      boundary = match.index;
      next = match.index + match[0].length;
      BLANK_LINE.lastIndex = next;
    }
    this.clearTail();
    if (boundary >= this.committed) {
      for (const block of this.text.slice(this.committed, boundary).split(BLANK_LINE)) {
        this.place(block, false);
      }
      this.committed = next;
    }
    this.tail = this.place(this.text.slice(this.committed), true);
  }

  /** No more text will come: lay the last paragraph out as complete. */
  end() {
    this.clearTail();
    this.place(this.text.slice(this.committed), false);
    this.committed = this.text.length;
  }

  place(block, partial) {
    const trimmed = block.replace(/^\n+/, "");
    if (!trimmed.trim()) return [];
    const nodes = layout(trimmed, { first: this.blocks === 0, partial });
    if (!partial) this.blocks += 1;
    this.container.append(...nodes);
    return nodes;
  }

  clearTail() {
    for (const node of this.tail) node.remove();
    this.tail = [];
  }
}
