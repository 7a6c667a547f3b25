"""Domain operations every dialect uses. They take a Principal and raise shared.errors."""
