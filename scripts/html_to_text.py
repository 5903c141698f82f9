#!/usr/bin/env python3
"""Converts Sphinx-generated HTML pages (e.g. Debian's linux-doc) to plain text, one JSON line per page.

Only the article body is kept (<div itemprop="articleBody">, else role="main", else <body>): the
navigation sidebar, header and footer repeat on every page and would dominate a small corpus.
Block elements become line breaks, paragraphs are separated by blank lines, <pre> keeps its
layout, and the "¶" permalink anchors are dropped. Standard library only (html.parser).

usage: html_to_text.py ROOT OUT.jsonl [--exclude DIR ...]
       every ROOT/**/*.html (sorted) becomes {"source": relative path, "text": ...}
"""
import argparse
import html.parser
import json
import os
import re
import sys

BLOCK = {"p", "div", "section", "article", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "li", "ul", "ol",
         "dl", "dt", "dd", "table", "tr", "blockquote", "pre", "figure", "figcaption", "caption", "tbody", "thead"}
PARAGRAPH = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "table", "ul", "ol", "dl", "blockquote", "section", "figure"}
SKIP = {"script", "style", "head", "title", "nav", "footer", "noscript", "svg"}
VOID = {"br", "hr", "img", "meta", "link", "input", "col", "area", "base", "wbr", "source"}


class PageText(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts = []
        self.stack = []          # open tags (non-void) with flags
        self.body_depth = None   # depth of the article body element once found
        self.skip_depth = 0
        self.pre_depth = 0
        self.found_body = False

    def _in_body(self):
        return self.body_depth is not None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        is_body = (not self.found_body and (attrs.get("itemprop") == "articleBody"))
        skip = tag in SKIP or "headerlink" in (attrs.get("class") or "")
        if tag in VOID:
            if self._in_body() and not self.skip_depth and tag in BLOCK:
                self.parts.append("\n")
            return
        self.stack.append((tag, is_body, skip))
        if is_body:
            self.found_body = True
            self.body_depth = len(self.stack)
        if skip:
            self.skip_depth += 1
        if tag == "pre":
            self.pre_depth += 1
        if self._in_body() and not self.skip_depth:
            if self.parts and self.parts[-1] == "- " and tag in BLOCK:
                pass  # a list item's first paragraph stays on the bullet's line
            elif tag in PARAGRAPH:
                self.parts.append("\n\n")
            elif tag in BLOCK:
                self.parts.append("\n")
            if tag == "li":
                self.parts.append("- ")
            elif tag in ("td", "th"):
                self.parts.append(" ")

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        # Pop to the matching tag (HTML in the wild is not always well nested).
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                break
        else:
            return
        while len(self.stack) > i:
            open_tag, is_body, skip = self.stack.pop()
            if self._in_body() and not self.skip_depth and open_tag in PARAGRAPH:
                self.parts.append("\n\n")
            if skip:
                self.skip_depth -= 1
            if open_tag == "pre":
                self.pre_depth -= 1
            if is_body:
                self.body_depth = None

    def handle_data(self, data):
        if not self._in_body() or self.skip_depth:
            return
        if self.pre_depth:
            self.parts.append(data)
            return
        text = re.sub(r"\s+", " ", data)
        if not self.parts or self.parts[-1].endswith("\n") or self.parts[-1] == "- ":
            text = text.lstrip()
        if text:
            self.parts.append(text)

    def text(self):
        raw = "".join(self.parts)
        out = "\n".join(line.rstrip() for line in raw.split("\n"))
        out = re.sub(r"\n{3,}", "\n\n", out)
        return out.strip() + "\n"


def page_text(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        source = f.read()
    parser = PageText()
    parser.feed(source)
    parser.close()
    if not parser.found_body:  # not a Sphinx article: fall back to <body>
        fallback = PageText()
        fallback.body_depth = 0
        fallback.found_body = True
        fallback.feed(source)
        fallback.close()
        return fallback.text()
    return parser.text()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root")
    parser.add_argument("out")
    parser.add_argument("--exclude", action="append", default=[], help="directory (relative to root) to skip")
    args = parser.parse_args()
    excluded = {os.path.normpath(e) for e in args.exclude}
    pages = []
    for dirpath, dirnames, filenames in os.walk(args.root):
        relative_dir = os.path.relpath(dirpath, args.root)
        dirnames[:] = sorted(d for d in dirnames
                             if os.path.normpath(os.path.join(relative_dir, d)) not in excluded and not d.startswith("_"))
        pages += [os.path.join(dirpath, f) for f in filenames if f.endswith(".html")]
    pages.sort()
    written = chars = 0
    with open(args.out + ".tmp", "w", encoding="utf-8") as out:
        for path in pages:
            if os.path.basename(path) in ("genindex.html", "search.html", "py-modindex.html"):
                continue
            text = page_text(path)
            if len(text.strip()) < 20:
                continue
            out.write(json.dumps({"source": os.path.relpath(path, args.root), "text": text}, ensure_ascii=False) + "\n")
            written += 1
            chars += len(text)
    os.replace(args.out + ".tmp", args.out)
    print(f"html_to_text: {written} pages, {chars} characters -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
