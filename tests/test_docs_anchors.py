"""Citations of the docs are by named anchor (``docs/methods.md#signed-neuron``), never by section
number, and every cited anchor exists: a new or moved section cannot silently break them."""

import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: a citation in code or prose: docs/<file>.md#<anchor>
CITATION = re.compile(r"docs/([a-z_]+)\.md#([a-z0-9-]+)")
#: a link inside a docs page: (file.md#anchor) or (#anchor)
DOC_LINK = re.compile(r"\]\((?:([a-z_]+)\.md)?#([a-z0-9-]+)\)")
ANCHOR = re.compile(r'<a id="([a-z0-9-]+)"></a>')


def anchors():
    """{page name: its anchors} of every page in docs/."""
    return {os.path.basename(p)[:-3]: set(ANCHOR.findall(open(p, encoding="utf-8").read()))
            for p in glob.glob(os.path.join(ROOT, "docs", "*.md"))}


def sources():
    patterns = ("sjconv/**/*.py", "sjconv/**/*.cu", "tests/*.py", "benchmarks/*", "examples/*.py", "README.md")
    for pattern in patterns:
        for path in glob.glob(os.path.join(ROOT, pattern), recursive=True):
            if os.path.isfile(path) and os.path.abspath(path) != os.path.abspath(__file__):   # not its own examples
                yield path, open(path, encoding="utf-8").read()


def missing_citations(known, texts):
    """``path: docs/page.md#anchor`` for every citation whose page or anchor does not exist."""
    return [f"{os.path.relpath(path, ROOT)}: docs/{page}.md#{anchor}" for path, text in texts
            for page, anchor in CITATION.findall(text) if anchor not in known.get(page, ())]


def test_every_cited_anchor_exists():
    known = anchors()
    assert known.get("methods") and known.get("protocols")
    assert missing_citations(known, sources()) == []
    cited = {a for _, text in sources() for _, a in CITATION.findall(text)}
    assert {"signed-neuron", "group-neuron", "pre-run", "bit-identity"} <= cited


def test_links_between_docs_pages_resolve():
    known = anchors()
    wrong = []
    for page in known:
        text = open(os.path.join(ROOT, "docs", f"{page}.md"), encoding="utf-8").read()
        for other, anchor in DOC_LINK.findall(text):
            if anchor not in known.get(other or page, ()):
                wrong.append(f"{page}.md: {other or page}.md#{anchor}")
    assert wrong == []


def test_no_citation_by_section_number():
    numbered = re.compile(r"§\s*\d+")
    found = [os.path.relpath(path, ROOT) for path, text in sources() if numbered.search(text)]
    found += [p for p in glob.glob(os.path.join(ROOT, "docs", "*.md")) if numbered.search(open(p).read())]
    assert found == []


def test_a_missing_anchor_is_reported():
    """The check can fail: a citation of an anchor that no page has, or of a page that does not exist."""
    known = anchors()
    texts = [("x.py", "see docs/methods.md#no-such-section and docs/nowhere.md#srp")]
    assert missing_citations(known, texts) == ["x.py: docs/methods.md#no-such-section", "x.py: docs/nowhere.md#srp"]
