"""Print the Python interpreter the Makefile should install into and run.

* Inside a virtual environment (or conda): that interpreter.
* A system Python that refuses ``pip install`` (PEP 668, "externally
  managed", as on Debian 12 and Ubuntu 23.04+): a virtual environment in
  the project (``.venv``), created on first use, with a line on stderr
  saying so.
* Otherwise: the interpreter itself.

``RESNET_KERAS_VENV`` names the folder of that environment (default:
``.venv`` in the project); ``RESNET_KERAS_EXTERNALLY_MANAGED=1`` or ``0``
overrides the PEP 668 check.
"""
import os
import subprocess
import sys
import sysconfig

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def in_virtual_environment():
    return sys.prefix != sys.base_prefix or bool(os.environ.get("CONDA_PREFIX"))


def externally_managed():
    forced = os.environ.get("RESNET_KERAS_EXTERNALLY_MANAGED")
    if forced in ("0", "1"):
        return forced == "1"
    return os.path.isfile(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))


def venv_python(venv):
    return os.path.join(venv, "Scripts" if os.name == "nt" else "bin",
                        "python.exe" if os.name == "nt" else "python")


def main():
    if in_virtual_environment() or not externally_managed():
        print(sys.executable)
        return 0
    venv = os.path.abspath(os.environ.get("RESNET_KERAS_VENV") or os.path.join(PROJECT, ".venv"))
    python = venv_python(venv)
    if not os.path.isfile(python):
        print(f"this system's Python is externally managed (PEP 668) and refuses pip "
              f"install: creating a virtual environment in {venv} and installing there",
              file=sys.stderr)
        created = subprocess.run([sys.executable, "-m", "venv", venv], capture_output=True,
                                 text=True)
        if created.returncode != 0:
            print(f"error: could not create a virtual environment in {venv} "
                  f"({(created.stderr or created.stdout).strip().splitlines()[-1:]}); "
                  "install the venv module (Debian/Ubuntu: apt install python3-venv) or "
                  "activate a virtual environment first", file=sys.stderr)
            return 1
    else:
        print(f"this system's Python is externally managed (PEP 668): using the virtual "
              f"environment in {venv}", file=sys.stderr)
    print(python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
