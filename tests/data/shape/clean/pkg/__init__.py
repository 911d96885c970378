"""A package that keeps every rule: the checker reports nothing."""
