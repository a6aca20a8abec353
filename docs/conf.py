"""Sphinx configuration of prefork_waitress's documentation (``tox -e docs`` builds it)."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the repository root: autodoc imports this checkout
sys.path.insert(0, os.path.join(HERE, "_ext"))

import prefork_waitress  # noqa: E402

project = "prefork_waitress"
author = "the prefork_waitress authors"
copyright = "the prefork_waitress authors"  # noqa: A001 (Sphinx's name)
release = version = prefork_waitress.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosectionlabel",  # :ref:`Section title` across pages
    "option_table",  # docs/_ext/option_table.py: the option reference, from the option table
]

exclude_patterns = ["_build"]
html_theme = "alabaster"
html_title = f"prefork_waitress {release}"
html_theme_options = {"description": "a WSGI app as single-threaded waitress workers, one port each"}
html_sidebars = {"**": ["about.html", "navigation.html", "relations.html", "searchbox.html"]}

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
