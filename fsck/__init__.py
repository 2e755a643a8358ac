"""registry-fsck: audit and repair the storage of a Docker Distribution registry.

The package is a pipeline, data flowing one way (see the README's layout of the code):
store, layout -> scan -> manifests -> reach -> checks -> plan -> apply -> report, with
`service` wiring the stages once for every caller and `commands` one module per command.
"""

__version__ = "0.1.0"
