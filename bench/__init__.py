"""``make bench``: the project, a tutorial-style baseline and the floors, side by side."""
