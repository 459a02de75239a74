"""Data on disk and in memory: prepared image sets, prompts, conditions, images and grids, atomic and checked files."""
