"""The HVM guest that runs the PV-on-HVM frontends under test."""

from harness.guest.hvm import HvmGuest, start

__all__ = ["HvmGuest", "start"]
