"""The workbench server's state and pages: the run it serves, the feature list, the build lab."""
