"""registry-fsck: audit and repair the filesystem storage of a Docker Distribution registry.

The package is a pipeline, one module per stage, data flowing one way:
layout -> scan -> manifests -> analyze (findings) -> plan -> apply -> report.
findings holds the catalogue of finding ids; verify re-hashes blobs; config reads the
registry's config file; guards tells whether the registry is live; cli and repair_cli
wire the stages into commands.
"""

__version__ = "0.1.0"
