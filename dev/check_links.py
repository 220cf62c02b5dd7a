#!/usr/bin/env python3
"""Dead links in the README and docs/: `python3 dev/check_links.py [FILE...]`.

Reads README.md and every docs/**/*.md (or the files named), finds every
Markdown link and image, `[text](target)` and `[ref]: target` (not in fenced
code blocks or inline code spans), and checks each relative target: the file
or directory exists, relative to the linking file's folder, and an `#anchor`
into a Markdown file names one of its headings (GitHub's slugs, duplicates
suffixed `-1`, `-2`, ...) or an explicit `<a id="...">` / `<a name="...">`.
A bare `#anchor` is the linking file itself; absolute URLs (`http:`,
`https:`, `mailto:`, any scheme) are not followed.

Prints every dead link as `file:line: target: why` and exits 1, or a
one-line summary and exits 0. Standard library only.
"""

import argparse
import re
import sys
import unicodedata
from pathlib import Path
from urllib.parse import unquote

MARKDOWN = (".md", ".markdown")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*$")
SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
EXPLICIT = re.compile(r"""<a\s[^>]*?\b(?:id|name)\s*=\s*["']([^"']+)["']""", re.I)
# [text](target "title") and ![alt](target); one level of brackets in the text.
INLINE = re.compile(
    r"!?\[(?:[^\[\]\\]|\\.|\[(?:[^\[\]\\]|\\.)*\])*\]"
    r"\(\s*(<[^>\n]*>|[^\s()<>]*(?:\([^\s()]*\)[^\s()<>]*)*)"
    r"""(?:\s+(?:"[^"]*"|'[^']*'|\([^)]*\)))?\s*\)"""
)
DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:[ \t]*(<[^>\n]*>|\S+)", re.M)


def blank(text):
    """The text with everything that is not a character of a newline blanked."""
    return re.sub(r"[^\n]", " ", text)


def prose(text):
    """The file's text with fenced code blocks and inline code spans blanked,
    so that offsets (and so line numbers) stay those of the file."""
    return code_spans(unfenced(text))


def unfenced(text):
    """The file's text with its fenced code blocks blanked."""
    lines = text.split("\n")
    out = []
    fence = None  # (character, length) of the open fence
    for line in lines:
        m = FENCE.match(line)
        if fence is None:
            if m and not (m.group(1)[0] == "`" and "`" in m.group(2)):
                fence = (m.group(1)[0], len(m.group(1)))
                out.append(blank(line))
            else:
                out.append(line)
        else:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= fence[1] and not m.group(2).strip():
                fence = None
            out.append(blank(line))
    return "\n".join(out)


def code_spans(text):
    """Blanks inline code spans: a run of n backticks up to the next run of
    exactly n, within one paragraph; an unmatched run stays as it is."""
    result = []
    i = 0
    run = re.compile(r"`+")
    while True:
        m = run.search(text, i)
        if not m:
            result.append(text[i:])
            break
        n = len(m.group(0))
        close = None
        for c in run.finditer(text, m.end()):
            if re.search(r"\n[ \t]*\n", text[m.end():c.start()]):
                break
            if len(c.group(0)) == n:
                close = c
                break
        if close is None:
            result.append(text[i:m.end()])
            i = m.end()
            continue
        result.append(text[i:m.start()])
        result.append(blank(text[m.start():close.end()]))
        i = close.end()
    return "".join(result)


def heading_text(raw):
    """A heading as GitHub renders it, as plain text."""
    s = re.sub(r"[ \t]+#+[ \t]*$", "", raw.strip())
    if re.fullmatch(r"#+", s):
        s = ""
    s = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", s)  # links and images: their text
    s = re.sub(r"<[^>]+>", "", s)  # inline HTML
    s = s.replace("`", "")
    s = re.sub(r"\\(.)", r"\1", s)  # backslash escapes
    s = re.sub(r"\*+", "", s)
    s = re.sub(r"(?<![A-Za-z0-9])_+|_+(?![A-Za-z0-9])", "", s)  # emphasis, not snake_case
    return s.strip()


def slug(text):
    """GitHub's slug (github-slugger): lowercase, every character that is not
    a letter, mark, digit, connector, space or hyphen dropped, spaces to `-`."""
    kept = []
    for ch in text.lower():
        cat = unicodedata.category(ch)
        if ch in " -" or cat[0] in "LMN" or cat == "Pc":
            kept.append(ch)
    return "".join(kept).replace(" ", "-")


def anchors(text):
    """Every anchor of a Markdown file: its headings' slugs, duplicates
    suffixed as GitHub does, and explicit `<a id>` / `<a name>`."""
    lines = unfenced(text).split("\n")
    found = set()
    occurrences = {}

    def add(heading):
        base = slug(heading_text(heading))
        result = base
        while result in occurrences:
            occurrences[base] += 1
            result = f"{base}-{occurrences[base]}"
        occurrences[result] = 0
        found.add(result)

    previous = ""
    for line in lines:
        m = ATX.match(line)
        if m:
            add(m.group(2) or "")
            previous = ""
            continue
        if SETEXT.match(line) and previous.strip() and not previous.lstrip().startswith(("-", "*", "+", ">", "|")) and "|" not in previous:
            add(previous)
            previous = ""
            continue
        previous = line
    for m in EXPLICIT.finditer(prose(text)):
        found.add(m.group(1))
    return found


def links(text):
    """(line, target) of every link and image outside code."""
    plain = prose(text)
    found = []
    for m in INLINE.finditer(plain):
        start = m.start(1)
        found.append((plain.count("\n", 0, start) + 1, m.group(1)))
    for m in DEFINITION.finditer(plain):
        start = m.start(1)
        found.append((plain.count("\n", 0, start) + 1, m.group(1)))
    found.sort()
    return found


class Checker:
    def __init__(self, root):
        self.root = root
        self.cache = {}

    def anchors_of(self, path):
        key = path.resolve()
        if key not in self.cache:
            self.cache[key] = anchors(path.read_text(encoding="utf-8"))
        return self.cache[key]

    def why_dead(self, source, target):
        """None when the target is there, else why it is not."""
        target = target.strip()
        if target.startswith("<") and target.endswith(">"):
            target = target[1:-1].strip()
        path_part, _, fragment = target.partition("#")
        path_part = path_part.split("?", 1)[0]
        if not path_part:
            destination = source
        elif path_part.startswith("/"):
            destination = self.root / unquote(path_part.lstrip("/"))
        else:
            destination = source.parent / unquote(path_part)
        if not destination.exists():
            return "no such file or directory"
        if not fragment:
            return None
        if destination.is_dir():
            return "an anchor on a directory"
        if destination.suffix.lower() not in MARKDOWN:
            return None  # an anchor into another kind of file (a line of code, say) is not checked
        if unquote(fragment) not in self.anchors_of(destination):
            return f"no heading or anchor #{fragment} in {self.show(destination)}"
        return None

    def show(self, path):
        try:
            return str(path.resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path)


def default_files(root):
    files = [root / "README.md"] if (root / "README.md").exists() else []
    files += sorted(p for p in (root / "docs").rglob("*") if p.is_file() and p.suffix.lower() in MARKDOWN)
    return files


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="Markdown files to check (default: README.md and docs/**/*.md)")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the repository root (default: the folder above dev/)")
    args = parser.parse_args(argv)
    root = args.root
    files = args.files or default_files(root)
    checker = Checker(root)
    dead = []
    checked = 0
    for file in files:
        if not file.is_file():
            dead.append(f"{file}: cannot read the file")
            continue
        for line, target in links(file.read_text(encoding="utf-8")):
            if SCHEME.match(target.strip("<> ")):
                continue
            checked += 1
            why = checker.why_dead(file, target)
            if why:
                dead.append(f"{checker.show(file)}:{line}: {target}: {why}")
    for d in dead:
        print(d)
    if dead:
        print(f"links: {len(dead)} dead of {checked} checked in {len(files)} files")
        return 1
    print(f"links: {checked} checked in {len(files)} files, none dead")
    return 0


if __name__ == "__main__":
    sys.exit(main())
