"""Training: the generator, the DMD losses and steps (paper Algorithm 1, DMD2's options), the resumable and
data-parallel loop, the regression pairs, memory options, and the 2-D toy."""
