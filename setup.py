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
    extras_require={
        # Scale-out on Django's Tasks framework: built into Django 6+, the
        # django-tasks backport on 5.2. The backport is required always (an
        # install marker cannot see the Django version); on Django 6 it is
        # unused, as Kong and django-tasks-db import django.tasks first.
        "tasks": ["django-tasks>=0.12,<0.13", "django-tasks-db>=0.13,<0.14"],
        # The RQ (Redis) backend instead of the database one.
        "rq": ["django-tasks>=0.12,<0.13", "django-tasks-rq>=0.12,<0.13"],
    },
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
