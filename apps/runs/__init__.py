"""What every run is made of: its settings, primary model and data splits (setup), its
evaluation and its training curves."""
