import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
# One source for the version: kong/__init__.py.
VERSION = re.search(r'^__version__ = "([^"]+)"', (HERE / "kong" / "__init__.py").read_text(), re.M).group(1)

setup(
    name="django-kong",
    version=VERSION,
    description="Fleet-wide functional smoke tests for Django sites, written in twill.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["kong", "kong.*"]),
    include_package_data=True,
    package_data={
        "kong": [
            "py.typed",
            "templates/kong/*.html",
            "templates/kong/**/*.html",
            "templates/kong/**/*.txt",
            "static/kong/*",
            "static/kong/**/*",
        ]
    },
    python_requires=">=3.11",
    install_requires=[
        "Django>=5.2,<7",
        "twill>=3.3,<=3.3.1",  # the versions the engine was verified against (kong.engine.grammar)
        "croniter>=2.0",
    ],
    classifiers=[
        "Framework :: Django",
        "Framework :: Django :: 5.2",
        "Framework :: Django :: 6.0",
        "License :: OSI Approved :: MIT License",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: System :: Monitoring",
    ],
    zip_safe=False,
)
