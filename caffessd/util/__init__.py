"""Small utilities every layer shares: atomic file writing and readable-file
checks (files), output paths that cannot destroy inputs (outputs), an
ordered bounded parallel map (parallel), progress lines (progress), and
importing a library without one of its optional dependencies (imports).

May import: nothing from caffessd but `errors` (the lowest layer).
"""
