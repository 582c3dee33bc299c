"""Kong's demo in one command (``make demo``).

Starts the fake demo sites, migrates the demo's SQLite database, loads the
demo fleet, creates the ``admin``/``admin`` superuser, runs ``check_sites``
once, then serves the dashboard and the admin on http://127.0.0.1:8000/
until Ctrl-C.

    python example_project/run_demo.py             # the whole demo
    python example_project/run_demo.py --no-serve  # check once and exit (CI)

``KONG_DEMO_PORT`` changes the port; ``KONG_DEMO_DB`` the SQLite file.
Exit status with ``--no-serve``: 0 when exactly the deliberately broken
site failed, 1 when anything else failed, 3 when Kong could not run.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the `demo` settings package and demo_sites
os.environ["DJANGO_SETTINGS_MODULE"] = "demo.settings"  # never another project's settings

import demo_sites  # noqa: E402  (needs the path above)

ADMIN_USERNAME = ADMIN_PASSWORD = "admin"
# How long the demo sites may take to start listening before we give up.
SITES_STARTUP_SECONDS = 15.0


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-serve", action="store_true", help="run the check once and exit; no web server")
    parser.add_argument("--port", type=int, default=int(os.environ.get("KONG_DEMO_PORT") or 8000))
    options = parser.parse_args(argv)
    os.environ["KONG_DEMO_PORT"] = str(options.port)  # the settings build KONG_BASE_URL from it

    # `kill` (SIGTERM) stops the demo as Ctrl-C does, stopping the sites too.
    signal.signal(signal.SIGTERM, _interrupt)

    import django

    django.setup()
    sites = start_demo_sites()
    try:
        prepare_database()
        status = run_check()
        if options.no_serve:
            return status
        if status == 3:
            return status
        serve(options.port)
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        stop_demo_sites(sites)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


# -- the fake sites ------------------------------------------------------


def start_demo_sites() -> subprocess.Popen[bytes] | None:
    """Start demo_sites.py in a child process and wait until every site answers.

    A separate process keeps the sites' threads out of this one, which forks
    Kong's check workers. Sites already running (from an earlier
    ``python example_project/demo_sites.py``) are reused; returns None then.
    """
    if all(demo_sites.is_serving(site) for site in demo_sites.SITES):
        print("Using the demo sites already running on 127.0.0.1.")
        return None
    child = subprocess.Popen([sys.executable, str(HERE / "demo_sites.py")], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + SITES_STARTUP_SECONDS
    while not all(demo_sites.is_serving(site) for site in demo_sites.SITES):
        if child.poll() is not None or time.monotonic() > deadline:
            stop_demo_sites(child)
            ports = ", ".join(str(site.port) for site in demo_sites.SITES)
            raise SystemExit(f"The demo sites could not start: is another program using ports {ports}?")
        time.sleep(0.1)
    print(f"Demo sites are up: {len(demo_sites.SITES)} fake sites on 127.0.0.1 (one is broken on purpose).")
    return child


def stop_demo_sites(child: subprocess.Popen[bytes] | None) -> None:
    if child is None or child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


# -- the database --------------------------------------------------------


def prepare_database() -> None:
    """Migrate, load the demo fleet (again: loading by natural keys updates
    the same rows) and create the admin user if missing."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    print(f"Database: {settings.DATABASES['default']['NAME']}")
    call_command("migrate", interactive=False, verbosity=0)
    call_command("loaddata", "demo_fleet", verbosity=0)
    from kong.models import Site, Test

    print(f"Loaded the demo fleet: {Site.objects.count()} sites, {Test.objects.count()} tests.")
    users = get_user_model()
    if not users.objects.filter(username=ADMIN_USERNAME).exists():
        users.objects.create_superuser(ADMIN_USERNAME, "admin@example.com", ADMIN_PASSWORD)
        print(f"Created the superuser {ADMIN_USERNAME!r} (password {ADMIN_PASSWORD!r}).")


# -- the check -----------------------------------------------------------


def run_check() -> int:
    """Run ``check_sites`` once, showing its output and the alert mails.

    Returns 0 when exactly the broken demo site failed, 1 when anything
    else failed too, 3 when check_sites could not run.
    """
    from django.core import mail
    from django.core.management import CommandError, call_command

    from kong.models import Check

    print("\n$ python example_project/manage.py check_sites -v 2")
    mail.outbox = []
    # Collect the alert mails instead of printing each one mid-output.
    with collected_mail():
        try:
            call_command("check_sites", verbosity=2)
            code = 0
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        except CommandError as error:
            print(f"check_sites could not run: {error}", file=sys.stderr)
            return 3
    print(f"(check_sites exited with status {code}: 0 means all passed, 2 means something failed.)")
    show_mails(mail.outbox)

    broken = {site.slug for site in demo_sites.SITES if site.broken}
    unexpected = Check.objects.failing().exclude(site__slug__in=broken).select_related("site", "test")
    if unexpected:
        labels = ", ".join(check.label for check in unexpected)
        print(f"\nUnexpected failures (only {', '.join(sorted(broken))} should fail): {labels}", file=sys.stderr)
        return 1
    print(f"\nAs expected, only the deliberately broken site ({', '.join(sorted(broken))}) failed.")
    return 0


def collected_mail() -> Any:
    """Settings that send mail to ``django.core.mail.outbox`` for a while."""
    from django.conf import settings
    from django.test.utils import override_settings

    backend = "django.core.mail.backends.locmem.EmailBackend"
    if hasattr(settings, "MAILERS"):  # Django 6.1+
        return override_settings(MAILERS={"default": {"BACKEND": backend}})
    return override_settings(EMAIL_BACKEND=backend)


def show_mails(outbox: list[Any]) -> None:
    if not outbox:
        return
    print(f"\nKong mailed MANAGERS {len(outbox)} alert(s):")
    for message in outbox:
        print(f"  To {', '.join(message.to)}: {message.subject}")
    print("\nThe first one reads:\n")
    print("    " + outbox[0].body.strip().replace("\n", "\n    "))


# -- the web server ------------------------------------------------------


def serve(port: int) -> None:
    """Serve the dashboard and the admin in the foreground until Ctrl-C."""
    from django.core.management import call_command

    base = f"http://127.0.0.1:{port}"
    rule = "=" * 64
    print(
        f"\n{rule}\n"
        f"  Kong dashboard: {base}/\n"
        f"  Kong admin:     {base}/admin/\n"
        f"  Log in as {ADMIN_USERNAME} / {ADMIN_PASSWORD}.\n"
        f"  Ctrl-C stops the server and the demo sites.\n"
        f"{rule}\n",
        flush=True,
    )
    try:
        call_command("runserver", f"127.0.0.1:{port}", use_reloader=False)
    except SystemExit:
        pass  # runserver turns Ctrl-C into exit 0
    print("Stopped.")


if __name__ == "__main__":
    sys.exit(main())
