"""README stays the way in: its links to the documentation pages resolve, and its commands stay as given."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(*path):
    with open(os.path.join(ROOT, *path), encoding="utf-8") as f:
        return f.read()


def test_readme_links_to_docs_pages_that_exist_and_to_every_page_of_the_toctree():
    readme = read("README.rst")
    linked = set(re.findall(r"<(docs/[^>]+\.rst)>`_", readme))
    assert linked, "README links to no page of docs/"
    missing = sorted(path for path in linked if not os.path.isfile(os.path.join(ROOT, path)))
    assert not missing, f"README links to pages that do not exist: {missing}"
    toctree = set(re.findall(r"^   (\S+)$", read("docs", "index.rst"), re.MULTILINE))
    assert toctree, "docs/index.rst has no toctree entries"
    unlinked = sorted(page for page in toctree if f"docs/{page}.rst" not in linked)
    assert not unlinked, f"README does not link to these pages of the documentation: {unlinked}"


def test_readme_keeps_the_install_run_and_test_commands():
    readme = read("README.rst")
    assert "    pip install . && prefork-waitress --workers 3 examples.hello:app\n" in readme
    assert "    pip install tox && tox\n" in readme
