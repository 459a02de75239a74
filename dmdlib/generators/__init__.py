"""What training and evaluation share: the generator (build, run, save, load) and the seeded inputs every model is
sampled from."""
