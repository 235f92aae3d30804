"""Which folders become which packages; everything else is in pyproject.toml.

The repository's top level shows the architecture (controller/, agent/); installed, they are
subpackages of one `hilfarm` package. setuptools' own package discovery (pyproject's
`packages.find`) cannot put a found folder under another package's name, so the discovery is
here: every folder below a part is a package, found, not listed, the alembic migrations
(modules that alembic loads by path) and the constraint examples (data) included.
"""

from setuptools import find_namespace_packages, setup

PARTS = {"hilfarm": "hilfarm", "hilfarm.agent": "agent", "hilfarm.controller": "controller",
         "hilfarm.profiles": "profiles",
         # deploy/systemd, the one copy of the agent's unit, shipped for `hilfarm device provision`
         # (package data only: its unit file).
         "hilfarm.provision.systemd": "deploy/systemd"}


def packages():
    found = []
    for name, folder in PARTS.items():
        found.append(name)
        found += [f"{name}.{sub}" for sub in find_namespace_packages(folder, exclude=["__pycache__", "*.__pycache__"])]
    return found


setup(package_dir=PARTS, packages=packages())
