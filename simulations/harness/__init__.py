"""The experiment harness: the grid of cells and its cache (grid, grid_config, cells), the code version that keys
it, QNLI's held-out split, tuning on held-out examples (tune, equal_tuning), and the results page that turns the
cache into verdicts (results_rows selects, results_targets decides, results_page renders)."""
