"""Experiment grids: a base config, seeds and axes expanded into training runs, run and tabulated.

grid.py parses and expands a grid file, plan.py checks every run's command line and orders the runs
so that no two fit the same store at once, runner.py executes them, results.py writes the tables,
main.py is the command line (``tools/experiment.py``, ``arc experiment``).
"""
