"""The ``orchestra`` command: ``serve`` and ``engine install`` (:mod:`.main`), and the
client commands over the SDK (:mod:`.client`)."""

from orchestra.cli.main import main as main
