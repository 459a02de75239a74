"""Thin Typer executables, one per DVC stage: parse arguments, call dmdlib, write outputs."""
