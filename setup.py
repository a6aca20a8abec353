import re

from setuptools import find_packages, setup

with open("README.rst", encoding="utf-8") as f:
    long_description = f.read()
with open("prefork_waitress/__init__.py", encoding="utf-8") as f:  # not imported: waitress may be missing
    version = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)  # type: ignore[union-attr]

setup(
    name="prefork_waitress",
    version=version,
    description=(
        "Run a WSGI app as a cluster of single-threaded waitress processes, "
        "one port each, under a master your own Python code controls."
    ),
    long_description=long_description,
    long_description_content_type="text/x-rst",
    license="MIT",
    packages=find_packages(include=["prefork_waitress", "prefork_waitress.*"]),
    package_data={"prefork_waitress": ["py.typed"]},
    python_requires=">=3.9",
    install_requires=["waitress>=3.0.2,<4", "typing-extensions"],
    extras_require={
        # The frameworks are test dependencies only (tests/test_frameworks.py runs them);
        # Trac 1.6 imports pkg_resources, which setuptools 81 removed.
        "testing": [
            *("pytest", "pytest-timeout", "pytest-xdist", "pytest-rerunfailures"),  # xdist: tox.ini's parallel pass
            *("hypothesis", "PasteDeploy", "prometheus_client"),
            *("Django", "Flask", "pyramid", "Trac", "setuptools<81"),
            "gunicorn",  # the reference the bench scenarios' smoke runs (tests/test_bench_smoke.py) start
        ],
        # the bench scenarios (python -m bench peers, profile_worker); uwsgi and bjoern compile C
        # (build-essential python3-dev libev-dev); each is skipped when missing
        "bench": ["gunicorn", "flask", "py-spy", "uwsgi", "granian", "bjoern"],
    },
    entry_points={
        "console_scripts": ["prefork-waitress = prefork_waitress.__main__:main"],
        "paste.server_runner": ["main = prefork_waitress.paste:serve_paste"],
        "paste.server_factory": ["main = prefork_waitress.paste:server_factory"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX",
        "Topic :: Internet :: WWW/HTTP :: WSGI :: Server",
    ],
)
