"""The README's generated parts stay in sync with the code they describe."""
import re
import subprocess
import sys

from conftest import ROOT


def test_tf_variable_table_matches_the_catalogue():
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- tf-variable-table:begin -->\n(.*?)\n<!-- tf-variable-table:end -->", readme, re.S)
    assert match, "README lost its TF variable table markers"
    generated = subprocess.run([sys.executable, str(ROOT / "scripts" / "tf_variable_table.py")],
                               capture_output=True, text=True, check=True).stdout.strip()
    assert match.group(1).strip() == generated, "regenerate with python scripts/tf_variable_table.py"


def test_readme_documents_every_command():
    from caffessd.cli import COMMANDS

    readme = (ROOT / "README.md").read_text()
    for name, _ in COMMANDS:
        assert f"### `caffessd {name}`" in readme, name
