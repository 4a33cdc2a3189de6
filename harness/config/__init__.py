"""Configuration: YAML files validated into the typed objects of `schema`."""

from __future__ import annotations

from pathlib import Path

from harness.config.loader import load
from harness.config.schema import (DiskConfig, DomainStep, GuestConfig, HostConfig, ModulesConfig, ModuleSpec, ModuleStep,
                                   ReproSignature, ReproSpec, Scenario, Step, Timeouts, VbdStep)

__all__ = ["DiskConfig", "DomainStep", "GuestConfig", "HostConfig", "ModuleSpec", "ModuleStep", "ModulesConfig", "ReproSignature",
           "ReproSpec", "Scenario", "Step", "Timeouts", "VbdStep", "load_host", "load_scenario"]


def load_host(path: Path | str) -> HostConfig:
    return load(path, HostConfig)


def load_scenario(path: Path | str) -> Scenario:
    return load(path, Scenario)
