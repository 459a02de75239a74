"""The `dmd` command: the pipeline's stages and the commands beside them, each a thin Typer executable over dmdlib."""
