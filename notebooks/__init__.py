"""Notebooks for Baidu AI Studio; ``notebooks.aistudio`` holds what their cells call."""
