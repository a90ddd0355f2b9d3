"""hpatool: a command-line toolkit for the Human Protein Atlas image-classification workflow."""

__version__ = "0.1.0"
