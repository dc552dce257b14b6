"""Ray Serve application builders (``import_path`` targets of the Serve YAMLs beside them)."""
