"""xenrig: a hardware-in-the-loop harness for Xen's PV-on-HVM drivers.

Data flows one way (see docs/design.md): config -> images -> machine ->
host -> guest -> capture -> check(model) -> report.  The CLI and the pytest
plugin are thin layers over the same library calls.
"""

__version__ = "0.1.0"
