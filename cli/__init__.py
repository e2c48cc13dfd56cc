"""The `clrstudy` command line: local runs, server operations and HTTP client commands."""
