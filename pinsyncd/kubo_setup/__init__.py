"""`pinsyncd init` and `pinsyncd import-kubo`: a config from what the user's Kubo node knows."""
