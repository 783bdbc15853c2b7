"""Notebooks for Baidu AI Studio; ``notebooks.aistudio`` holds what their cells call, a module per
job, and ``python -m notebooks.clear_outputs`` clears them for a commit."""
