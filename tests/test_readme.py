"""The README and its reference tables in docs/ stay in sync with the code they describe."""
import re
import subprocess
import sys

from conftest import ROOT


def test_tf_variable_table_matches_the_catalogue():
    doc = (ROOT / "docs" / "tf-variables.md").read_text()
    match = re.search(r"<!-- tf-variable-table:begin -->\n(.*?)\n<!-- tf-variable-table:end -->", doc, re.S)
    assert match, "docs/tf-variables.md lost its TF variable table markers"
    generated = subprocess.run([sys.executable, str(ROOT / "scripts" / "tf_variable_table.py")],
                               capture_output=True, text=True, check=True).stdout.strip()
    assert match.group(1).strip() == generated, "regenerate with python scripts/tf_variable_table.py --write"


def _links(page):
    text = page.read_text()
    return [target for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text) if "://" not in target]


def test_readme_and_docs_links_resolve():
    # Relative links (docs/, models/ ...) point at files in the checkout.
    assert "docs/tf-variables.md" in _links(ROOT / "README.md")
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in _links(page):
            assert (page.parent / target).exists(), f"{page.name}: {target}"


def test_every_command_has_a_page_linked_from_the_readme():
    from caffessd.cli import COMMANDS

    readme = (ROOT / "README.md").read_text()
    for name, _ in COMMANDS:
        page = ROOT / "docs" / f"{name}.md"
        assert page.exists(), f"docs/{name}.md"
        assert f"# `caffessd {name}`" in page.read_text(), name
        assert f"(docs/{name}.md)" in readme, name


def test_readme_is_a_landing_page():
    assert len((ROOT / "README.md").read_bytes()) < 14_000


def _anchors(page) -> set:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to '-'."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_links_to_a_section_name_one_that_exists():
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", page.read_text()):
            if "://" in target:
                continue
            linked = page.parent / target if target else page
            assert anchor in _anchors(linked), f"{page.name}: {target}#{anchor}"


def test_no_placeholder_is_left_in_the_docs():
    """A line that is one upper-case token (TABLE_GOES_HERE) is text a writer meant to replace."""
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            assert not re.fullmatch(r"\s*[A-Z][A-Z0-9]*(_[A-Z0-9]+)+\s*", line), f"{page.name}:{number}: {line}"
