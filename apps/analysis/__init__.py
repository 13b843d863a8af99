"""The analysis of a finished run: feature statistics, concept recovery, explanations with
their causal check, steered builds, the static report; and the sweep report."""
