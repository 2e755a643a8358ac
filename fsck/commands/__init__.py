"""The command line: one module per command over `fsck.service`; `options` holds what they share."""
