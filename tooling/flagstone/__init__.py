"""Flagstone: feature flags as code.

The package is split in two halves that must stay apart:

* the SDK path — ``engine``, ``canonical``, ``envelope``, ``store``, ``errors`` and
  ``sdk`` — imports nothing from the toolchain (no click, ruamel, jsonschema, PyYAML or
  git code), so services that only evaluate flags stay light;
* the toolchain — ``loader``, ``model``, ``validate``, ``lint``, ``ownership``,
  ``compile``, ``gitops``, ``edit``, ``publish`` and ``cli`` — reads and writes the
  flag repository.
"""

__version__ = "0.1.0"
