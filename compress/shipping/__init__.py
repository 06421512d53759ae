"""The end of every run: the budget over the benched candidates, compiling the one that ships, the report."""
