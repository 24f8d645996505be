# Partial stub of orbax (ships no `py.typed`); see `orbax/checkpoint/__init__.pyi`.
