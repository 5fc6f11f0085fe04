"""The build's one addition to pyproject.toml: no wheel or sdist without GraphiQL's npm assets."""

from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

ROOT = Path(__file__).resolve().parent


def require_listed_files(distribution: Distribution) -> None:
    """Fail when a package-data entry naming one file (no wildcard) matches nothing.

    Those entries are the files GraphiQL needs from `npm ci` (and their licences): without the
    check a checkout where npm never ran builds a package whose GraphiQL needs a CDN.
    """
    missing = [
        f"{package.replace('.', '/')}/{pattern}"
        for package, patterns in (distribution.package_data or {}).items()
        for pattern in patterns
        if "*" not in pattern and not (ROOT / package.replace(".", "/") / pattern).is_file()
    ]
    if missing:
        raise SystemExit(
            "missing package data: " + ", ".join(missing) + "\n"
            "run `make npm` (npm ci in api/static/graphiql) before building a wheel or sdist"
        )


class BuildPy(build_py):
    def run(self) -> None:
        # An editable install serves the checkout's files: npm may run after it.
        if not self.editable_mode:
            require_listed_files(self.distribution)
        super().run()


class Sdist(sdist):
    def run(self) -> None:
        require_listed_files(self.distribution)
        super().run()


setup(cmdclass={"build_py": BuildPy, "sdist": Sdist})
