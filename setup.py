"""Generates the protobuf modules and typed NATS clients from proto/ (scripts/gen_proto.py) before setuptools
looks for packages, so a wheel built from a clean checkout holds avadios.v1; everything else is in pyproject.toml."""

import subprocess
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
if (ROOT / "proto").is_dir():  # an sdist or a checkout; an installed tree has the modules already
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_proto.py")], check=True, stdout=sys.stderr)
setup()
