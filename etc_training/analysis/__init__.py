"""Analyses of trained policies (`etc-vla analyze`): what a checkpoint does inside, measured in the sim world."""
