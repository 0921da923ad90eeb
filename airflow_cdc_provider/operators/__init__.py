"""Operators: the sync operator, and (per source) operators that enable change capture."""
