"""registry-fsck: audit and repair the filesystem storage of a Docker Distribution registry.

The package is a pipeline, one module per stage:
layout -> scan -> manifests -> analyze (findings) -> report; cli wires them.
"""

__version__ = "0.1.0"
