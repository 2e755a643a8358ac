"""Test harness: drives the real registry (Debian docker-registry 2.8) and skopeo."""
