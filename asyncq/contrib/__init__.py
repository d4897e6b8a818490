"""Integrations with other libraries, each in its own module, each an extra."""
