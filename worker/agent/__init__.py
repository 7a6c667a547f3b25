"""The tool-using agent loop and its prompt."""
