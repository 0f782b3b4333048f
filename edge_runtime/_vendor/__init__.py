"""Generated code edgetl ships rather than depends on (see each file's header for how it was made)."""
